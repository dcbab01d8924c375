"""Extensions written for A1111's public hooks load and work: scripts, callbacks, settings, tabs, JS/CSS,
preload.py and install.py; a broken extension is reported and skipped while the rest works."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from modules import cmd_args, services as services_module
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.sample_extension import events_of, write_broken_extensions, write_sample_extension
from tests.fixtures.tiny_checkpoints import build_tiny_model

SMALL = {"steps": 2, "width": 64, "height": 64, "seed": 7, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("ext"), {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    write_sample_extension(data / "extensions")
    write_broken_extensions(data / "extensions")
    args = cmd_args.parse_args(["--data-dir", str(data), "--api", "--skip-load-model-at-start"])
    services = services_module.create(args)
    from webui import create_app

    with app_client(create_app(services)) as client:
        client.services = services
        yield client
    services.shutdown()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_scripts_load_and_broken_extensions_are_reported(server):
    host = server.services.scripts
    for runner in (host.txt2img, host.img2img):
        assert runner.find_alwayson("sample always-on") is not None
        assert runner.find_selectable("sample dropdown") is not None
        assert all(script.title() != "Sample hidden" for script in runner.scripts)
    assert any(error.extension == "broken-import" and "this extension is broken" in error.message
               for error in host.errors)
    # what the broken file registered before failing was dropped with it
    assert all("broken" not in item.script for item in host.callbacks.callbacks("ui_tabs"))
    events = events_of(server.services)
    assert ("ui_settings", None) in events and ("ui_tabs", None) in events and ("app_started", True) in events


def test_alwayson_args_reach_the_hooks_in_a1111_order(server):
    events = events_of(server.services)
    plain = server.post("/sdapi/v1/txt2img", json={"prompt": "a cube", **SMALL}).json()
    assert ("process", False) in events   # always on: a request without its args runs it with its defaults
    events.clear()
    response = server.post("/sdapi/v1/txt2img", json={
        "prompt": "a cube", **SMALL, "n_iter": 2, "save_images": True,
        "alwayson_scripts": {"Sample always-on": {"args": [True, 0.7]}}})
    assert response.status_code == 200, response.text
    body = response.json()
    info = body["info"]
    assert "a cube, sample" in info and "Sample strength: 0.7" in info
    hooks = [name for name, _ in events if name in (
        "setup", "before_process", "process", "before_process_batch", "process_batch", "postprocess_batch",
        "postprocess_batch_list", "postprocess_image", "postprocess")]
    per_batch = ["before_process_batch", "process_batch", "postprocess_batch", "postprocess_batch_list",
                 "postprocess_image"]
    assert hooks == ["setup", "before_process", "process", *per_batch, *per_batch, "postprocess"]
    assert ("process", True) in events
    # postprocess_image inverted the picture: plainly different from the same seed without the script
    with_script = decode(body["images"][0]).convert("RGB")
    without = decode(plain["images"][0]).convert("RGB")
    assert with_script.getpixel((0, 0)) != without.getpixel((0, 0))
    # sampling callbacks saw every step, image-saved callbacks every saved image with its p
    assert [step for name, step in events if name == "cfg_after_cfg"][-2:] == [0, 1]
    assert any(name == "cfg_denoiser" for name, _ in events) and any(name == "cfg_denoised" for name, _ in events)
    saved = [detail for name, detail in events if name == "image_saved"]
    assert len(saved) >= 2 and all(path.endswith(".png") for path in saved[-2:])
    assert ("before_image_saved", True) in events


def test_dropdown_script_runs_with_positional_script_args(server):
    response = server.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "script_name": "sample dropdown",
                                                      "script_args": [3]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["images"]) == 3
    assert [int(text.split("Seed: ")[1].split(",")[0]) for text in
            [decode(image).info["parameters"] for image in body["images"]]] == [7, 8, 9]


def test_bad_script_requests_are_clear_422s(server):
    unknown = server.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"nope": {"args": []}}})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "alwayson_scripts", "nope"]
    too_many = server.post("/sdapi/v1/txt2img", json={
        **SMALL, "alwayson_scripts": {"sample always-on": {"args": [True, 0.5, "extra"]}}})
    assert too_many.status_code == 422 and "takes 2 arguments" in too_many.text
    bad_name = server.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "no such script"})
    assert bad_name.status_code == 422 and "sample dropdown" in bad_name.text
    # its ui() failed: no controls to count, it takes what it is sent (docs/extensions.md, Gradio 6)
    sent = server.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"bad ui": {"args": [1]}}})
    assert sent.status_code == 200, sent.text
    assert server.get("/sdapi/v1/options").status_code == 200   # and the server keeps serving


def test_process_images_on_a_new_p_inside_a_job_runs_there(server):
    events = events_of(server.services)
    response = server.post("/sdapi/v1/txt2img", json={
        "prompt": "a cube", **SMALL, "alwayson_scripts": {"sample always-on": {"args": [True, 1.0]}}})
    assert response.status_code == 200, response.text
    assert ("nested", 1) in events


def test_elem_ids_are_a1111s():
    from modules import scripts

    class BothTabs(scripts.Script):
        def title(self):
            return "X/Y/Z plot"

    class Img2ImgOnly(scripts.Script):
        def title(self):
            return "SD upscale"

        def show(self, is_img2img):
            return is_img2img

    both, only = BothTabs(), Img2ImgOnly()
    both.is_img2img = only.is_img2img = True
    assert both.elem_id("x_type") == "script_img2img_xyz_plot_x_type"
    assert only.elem_id("overlap") == "script_sd_upscale_overlap"


def test_script_info_lists_the_extension_scripts_with_their_args(server):
    infos = {(info["name"], info["is_img2img"]): info for info in server.get("/sdapi/v1/script-info").json()}
    args = infos[("sample always-on", False)]["args"]
    assert [arg["label"] for arg in args] == ["Sample enabled", "Sample strength"]
    assert args[1]["minimum"] == 0.0 and args[1]["maximum"] == 1.0 and args[1]["value"] == 0.5
    assert infos[("sample always-on", False)]["is_alwayson"] is True
    assert infos[("sample dropdown", True)]["is_alwayson"] is False


def test_settings_entry_tab_route_and_assets(server):
    options = server.get("/sdapi/v1/options").json()
    assert options["sample_ext_flag"] is False
    assert server.post("/sdapi/v1/options", json={"sample_ext_flag": True}).status_code == 200
    assert server.get("/sample/ping").json() == {"ok": True, "flag": True}   # on_app_started's route
    config = server.get("/config").json()
    text = str(config)
    assert "Sample Tab" in text and "sample_ext_hello" in text and "Bad UI: could not build its controls" in text
    assert "window.sampleExtensionLoaded = true" in config.get("head", "")
    assert "#sample_ext_hello { color: rgb(1, 2, 3); }" in config.get("css", "")


def test_preload_adds_flags_and_install_py_runs(tmp_path):
    from webui import prepare_extensions

    folder = write_sample_extension(tmp_path / "extensions")
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--sample-flag"], preload=prepare_extensions)
    assert args.sample_flag is True
    assert (folder / "installed.marker").read_text() == "yes"
    (folder / "installed.marker").unlink()
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--skip-install"], preload=prepare_extensions)
    assert args.sample_flag is False and not (folder / "installed.marker").exists()
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--disable-all-extensions", "--skip-install"],
                               preload=prepare_extensions)
    with pytest.raises(SystemExit):   # disabled: its flag does not exist
        cmd_args.parse_args(["--data-dir", str(tmp_path), "--disable-all-extensions", "--sample-flag"],
                            preload=prepare_extensions)


def test_builtin_example_extension_appends_its_suffix(server):
    response = server.post("/sdapi/v1/txt2img", json={
        "prompt": "a cube", **SMALL, "alwayson_scripts": {"prompt suffix": {"args": [True, "golden hour"]}}})
    assert response.status_code == 200, response.text
    assert "a cube, golden hour" in response.json()["info"]
    assert "Prompt suffix: golden hour" in decode(response.json()["images"][0]).info["parameters"]


def test_metadata_ini_orders_scripts_and_callbacks(tmp_path):
    from types import SimpleNamespace

    from modules.addons import extensions, script_loading

    for name, before in (("aaa", ""), ("bbb", "[scripts/b.py]\nBefore = a.py\n"
                                             "[callbacks/bbb/b.py/ui_settings]\nBefore = aaa/a.py/ui_settings\n")):
        folder = tmp_path / "extensions" / name / "scripts"
        folder.mkdir(parents=True)
        letter = name[0]
        (folder / f"{letter}.py").write_text(
            "from modules import script_callbacks, scripts\n"
            f"class S(scripts.Script):\n    def title(self):\n        return {letter!r}\n"
            "    def show(self, is_img2img):\n        return scripts.AlwaysVisible\n"
            "script_callbacks.on_ui_settings(lambda: None)\n", encoding="utf-8")
        (folder.parent / "metadata.ini").write_text(f"[Extension]\nName = {name}\n{before}", encoding="utf-8")
    paths = SimpleNamespace(extensions=tmp_path / "extensions", extensions_builtin=tmp_path / "none")
    flags = SimpleNamespace(disable_all_extensions=False, disable_extra_extensions=False)
    found = extensions.discover(paths, {}, flags)
    host = script_loading.load(script_loading.ScriptHost(), tmp_path / "no-scripts", found)
    assert [script.title() for script in host.txt2img.scripts] == ["b", "a"]   # bbb asked to load before a.py
    assert [item.name for item in host.callbacks.callbacks("ui_settings")] == [
        "bbb/b.py/ui_settings", "aaa/a.py/ui_settings"]


def test_a_preload_adding_a_flag_the_web_ui_has_keeps_going(tmp_path):
    """The ControlNet extension's preload adds --controlnet-dir, which this web UI defines itself: the extension's
    other flags still arrive, and nothing is listed as a failure."""
    from modules.addons import script_loading
    from webui import prepare_extensions

    folder = tmp_path / "extensions" / "cn-like"
    folder.mkdir(parents=True)
    (folder / "preload.py").write_text(
        "def preload(parser):\n"
        "    parser.add_argument('--controlnet-dir', type=str, default=None, help='again')\n"
        "    parser.add_argument('--controlnet-extra-flag', action='store_true')\n", encoding="utf-8")
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--skip-install", "--controlnet-extra-flag",
                                "--controlnet-dir", str(tmp_path)], preload=prepare_extensions)
    assert args.controlnet_extra_flag is True and args.controlnet_dir == str(tmp_path)
    assert not [error for error in script_loading.preload_errors if error.extension == "cn-like"]


def test_file_urls_serve_extensions_files_and_nothing_else(server, tmp_path):
    """A1111's `file=<path>` (tag autocomplete fetches its tag lists and the paths it wrote to tmp/ so)."""
    from modules import paths

    extension = next(found.path for found in server.services.scripts.extensions if found.enabled
                     and not found.is_builtin)
    (extension / "tags").mkdir(exist_ok=True)
    (extension / "tags" / "tags.csv").write_text("1girl,0\n")
    (extension / ".git").mkdir(exist_ok=True)
    (extension / ".git" / "config").write_text("[remote] url = https://token@example.com")
    written = Path(paths.script_path) / "tmp" / f"file-route-{tmp_path.name}.txt"
    written.parent.mkdir(exist_ok=True)
    written.write_text(str(extension / "tags"))
    try:
        pointer = server.get(f"/file=tmp/{written.name}?123")
        assert pointer.status_code == 200 and pointer.text == str(extension / "tags")
        assert server.get(f"/file={extension}/tags/tags.csv").text == "1girl,0\n"
        relative = extension.relative_to(server.services.paths.data)
        assert server.get(f"/file={relative}/tags/tags.csv").status_code == 200   # A1111's extensions/<name>/...
        for refused in (f"{extension}/.git/config", "webui.py", "tmp/../webui.py", "/etc/passwd",
                        f"{extension}/tags/../../../config.json"):
            assert server.get(f"/file={refused}").status_code == 404, refused
        # served through Gradio's file route, which the page's login (--gradio-auth) covers
        assert server.get(f"/file=tmp/{written.name}", follow_redirects=False).headers["location"].startswith(
            "/gradio_api/file=")
    finally:
        written.unlink()
