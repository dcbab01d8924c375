"""The Settings tab's pages without a browser: Defaults writes the controls a user changed to ui-config.json,
Sysinfo reports the system without a login or key in it, Actions hash the checkpoints, Licenses come from the
installed packages."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from modules import cmd_args, services as services_module
from modules.system import licenses, sysinfo
from modules.ui import create_ui, settings_pages, ui_config
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model

SECRETS = ("alice:wonderland", "api-user:s3cret-pw")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"),
                                     {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    built = services_module.create(cmd_args.parse_args(
        ["--data-dir", str(data), "--skip-load-model-at-start", "--gradio-auth", SECRETS[0],
         f"--api-auth={SECRETS[1]}"]))
    yield built
    built.shutdown()


@pytest.fixture(scope="module")
def page(services):
    demo = create_ui(services)
    tabs = next(block for block in demo.blocks.values() if isinstance(block, gr.Tabs) and block.elem_id == "tabs")
    return demo, tabs


def test_the_settings_list_offers_the_four_pages(page):
    demo, _ = page
    sections = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "settings_sections")
    values = [value for _, value in sections.choices]
    assert values[-4:] == ["defaults", "sysinfo", "actions", "licenses"]
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"ui_defaults_view", "ui_defaults_apply", "sysinfo_download", "request_notifications",
            "download_localization", "sett_unload_sd_model", "sett_reload_sd_model",
            "calculate_all_checkpoint_hash"} <= ids


def test_defaults_view_and_apply_write_only_what_was_changed(page, services):
    _, tabs = page
    path = services.paths.ui_config_file
    controls = settings_pages.default_controls(tabs)
    assert "txt2img/Sampling steps/value" in controls and "controlnet/Sampling steps/value" in controls
    saved, usable = ui_config.read_ui_config(path)   # written at start with every control's default
    assert usable and saved["txt2img/Sampling steps/value"] == 20
    values = {key: saved.get(key) for key in controls}
    assert settings_pages.changed_defaults(saved, values) == []
    values["txt2img/Sampling steps/value"] = 33
    values["txt2img/Prompt/value"] = "a lighthouse"
    table = settings_pages.defaults_table(settings_pages.changed_defaults(saved, values))
    assert "txt2img/Sampling steps/value" in table and "<td>33</td>" in table
    assert "Wrote 2 changes" in settings_pages.apply_defaults(path, values)
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["txt2img/Sampling steps/value"] == 33 and written["txt2img/Prompt/value"] == "a lighthouse"
    assert {key: value for key, value in written.items() if key not in values or value == values[key]} == written
    assert "No changes" in settings_pages.apply_defaults(path, values)


def test_defaults_never_overwrite_a_damaged_file(tmp_path):
    path = tmp_path / "ui-config.json"
    path.write_text("{not json", encoding="utf-8")
    assert "damaged" in settings_pages.apply_defaults(path, {"txt2img/Prompt/value": "x"})
    assert path.read_text(encoding="utf-8") == "{not json"


def test_sysinfo_has_the_system_and_no_secret(services, monkeypatch):
    monkeypatch.setenv("COMMANDLINE_ARGS", f"--listen --api-auth {SECRETS[1]} --gradio-auth={SECRETS[0]}")
    monkeypatch.setattr("sys.argv", ["webui.py", "--gradio-auth", SECRETS[0], "--api-auth", SECRETS[1], "--api"])
    path = settings_pages.write_sysinfo(services)
    text = path.read_text(encoding="utf-8")
    for secret in (*SECRETS, "wonderland", "s3cret"):
        assert secret not in text
    report = json.loads(text)
    assert {"Platform", "Python", "Version", "Torch", "CPU", "RAM", "Commandline", "Flags", "Extensions",
            "Config", "Packages"} <= set(report)
    assert report["Torch"]["version"] and isinstance(report["Torch"]["gpus"], list)
    assert report["Commandline"] == ["webui.py", "--gradio-auth", "<hidden>", "--api-auth", "<hidden>", "--api"]
    assert report["Flags"]["api_auth"] == "<hidden>" and report["Flags"]["skip_load_model_at_start"] is True
    assert "<hidden>" in report["Environment"]["COMMANDLINE_ARGS"]
    assert report["Config"]["outdir_save"] == "log/images"
    assert any(line.startswith("gradio==") for line in report["Packages"])
    assert path.name.startswith("sysinfo-") and path.suffix == ".json"


def test_settings_whose_names_say_secret_are_hidden():
    shown = sysinfo.settings({"my_ext_api_key": "abc", "hf_token": "t", "samples_format": "png", "empty_key": ""})
    assert shown == {"my_ext_api_key": "<hidden>", "hf_token": "<hidden>", "samples_format": "png", "empty_key": ""}
    assert sysinfo.redact_argv(["--tls-keyfile", "/k.pem", "--tls_keyfile=/k.pem", "--port", "1"]) == [
        "--tls-keyfile", "<hidden>", "--tls_keyfile=<hidden>", "--port", "1"]


def test_licenses_come_from_the_installed_packages(tmp_path):
    (tmp_path / "requirements.txt").write_text("# comment\ngradio>=6,<7\ntorch\n-r other.txt\n"
                                               "surely-not-installed-pkg==1\n", encoding="utf-8")
    assert licenses.requirement_names(tmp_path / "requirements.txt") == ["gradio", "torch",
                                                                         "surely-not-installed-pkg"]
    found = {package.name.lower(): package for package in licenses.dependency_licenses(tmp_path)}
    assert "Apache" in found["gradio"].license and found["gradio"].texts
    assert "Apache License" in found["gradio"].texts[0][1]
    assert found["surely-not-installed-pkg"].version is None
    page = settings_pages.licenses_html(Path(__file__).resolve().parent.parent)
    assert "diffusers" in page and "Apache" in page and "<details>" in page


def test_hash_all_checkpoints_runs_on_the_worker(services):
    answer = settings_pages.hash_all_checkpoints(services)
    assert "1 of 1 checkpoints have a hash" in answer
    assert services.registry.items()[0].sha256
