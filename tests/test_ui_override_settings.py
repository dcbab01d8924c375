"""The generation tabs' "Override settings" box (A1111's): a pasted infotext's settings that differ from the saved
ones ("RNG: CPU", "ENSD: 31337") are shown and go with the tab's requests; an infotext without "RNG" means GPU."""
from __future__ import annotations

import gradio as gr
import pytest

from modules import cmd_args, services as services_module
from modules.ui import img2img, request_form, txt2img
from modules.ui.paste_button import paste_handler
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model

PASTED = ("a cat\nSteps: 3, Sampler: Euler a, Seed: 5, Size: 64x64, RNG: CPU, ENSD: 31337, Eta: 0.5, "
          "Model: tiny-sd1")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data)]))
    yield built
    built.shutdown()


@pytest.fixture(scope="module")
def tabs(services):
    with gr.Blocks():
        return {"txt2img": txt2img.create_tab(services), "img2img": img2img.create_tab(services)}


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_pasted_settings_are_shown_and_go_with_the_request(services, tabs, tab):
    fields = tabs[tab].fields
    box = fields["override_settings"]
    updates = paste_handler(services, fields)(PASTED)
    shown = updates[box]
    assert shown["visible"] and shown["value"] == ["RNG: CPU", "ENSD: 31337", "Eta: 0.5"]
    request = request_form.validated(services, {"prompt": "a cat", "width": 64, "height": 64,
                                                "override_settings": shown["value"][:2]})
    assert request.option_overrides == {"randn_source": "CPU", "eta_noise_seed_delta": 31337}


def test_an_infotext_without_rng_means_gpu(services, tabs):
    fields = tabs["txt2img"].fields
    services.options.update({"randn_source": "CPU"})
    try:
        shown = paste_handler(services, fields)("a cat\nSteps: 3, Sampler: Euler, Seed: 5")[fields["override_settings"]]
        assert shown["value"] == ["RNG: GPU"]
    finally:
        services.options.update({"randn_source": "GPU"})
    shown = paste_handler(services, fields)("a cat\nSteps: 3, Sampler: Euler, Seed: 5")[fields["override_settings"]]
    assert shown["value"] == [] and not shown["visible"]
