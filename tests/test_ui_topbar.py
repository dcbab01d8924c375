"""The top bar's checkpoint and prediction-type dropdowns without a browser: Gradio 6's Dropdown fires `input`
again when it loses focus, and opening one and closing it without a choice fires it too; neither is a new pick."""
from __future__ import annotations

import pytest

from modules import cmd_args, services as services_module
from modules.ui import topbar
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"),
                                     {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start"]))
    yield built
    built.shutdown()


def _no_switch(*args, **kwargs):
    raise AssertionError("the checkpoint was switched (and logged) again")


def test_a_pick_and_its_repeat_on_blur_switch_once(services, monkeypatch, caplog):
    caplog.set_level("INFO", logger="modules.ui.topbar")
    update, state = topbar.switch_checkpoint(services, "tiny-sd1.safetensors", {"title": None, "failed": None})
    assert state["title"] == services.models.current.info.title and state["title"] != "tiny-sd1.safetensors"
    monkeypatch.setattr(services, "switch_model", _no_switch)
    # the repeat carries the title as the list showed it before loading (no hash yet)
    again, kept = topbar.switch_checkpoint(services, "tiny-sd1.safetensors", state)
    assert kept is state
    assert [record.getMessage() for record in caplog.records].count(
        "switching checkpoint to tiny-sd1.safetensors") == 1
    assert topbar.same_checkpoint(services, "tiny-sd1", state["title"])
    assert not topbar.same_checkpoint(services, "other.safetensors", state["title"])


def test_closing_the_prediction_type_without_a_new_choice_does_nothing(services, monkeypatch):
    title = services.models.current.info.title if services.models.current else "tiny-sd1.safetensors"
    monkeypatch.setattr(services, "switch_model", _no_switch)
    assert topbar.prediction_override(services, title) == topbar.AUTOMATIC
    result = topbar.set_prediction_override(services, topbar.AUTOMATIC, title)
    assert result.get("__type__") == "update" and set(result) == {"__type__"}   # gr.skip(): no change, no toast
    assert (services.options.sd_model_prediction_overrides or {}) == {}
