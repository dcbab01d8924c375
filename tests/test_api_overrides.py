"""override_settings: options for one request, restored afterwards unless the client says otherwise."""
from __future__ import annotations

import base64
import io
import threading

import pytest
from PIL import Image

from modules import cmd_args, services as services_module
from modules.output.infotext import parse_infotext
from modules.options import Options
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model

SMALL = {"prompt": "x", "seed": 3, "width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), {
        "first.safetensors": build_tiny_model("sd1"), "second.safetensors": build_tiny_model("sd1", seed=1)})
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        client.services = services
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "first"}).status_code == 200
        yield client
    services.shutdown()


def infotext_of(response) -> dict:
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
    return parse_infotext(image.info["parameters"])


def test_an_override_applies_to_its_request_only(server):
    plain = infotext_of(server.post("/sdapi/v1/txt2img", json=SMALL))
    assert plain["Model"] == "first"
    hidden = infotext_of(server.post("/sdapi/v1/txt2img", json={
        **SMALL, "override_settings": {"add_model_name_to_info": False, "add_model_hash_to_info": False}}))
    assert "Model" not in hidden and "Model hash" not in hidden
    assert server.get("/sdapi/v1/options").json()["add_model_name_to_info"] is True
    assert infotext_of(server.post("/sdapi/v1/txt2img", json=SMALL))["Model"] == "first"


def test_an_override_changes_how_images_are_saved(server):
    outputs = server.services.paths.outputs / "txt2img-images"
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 11, "save_images": True,
                                                      "override_settings": {"samples_format": "jpg"}})
    assert response.status_code == 200, response.text
    assert [p.suffix for p in outputs.rglob("*-11.*")] == [".jpg"]
    assert server.get("/sdapi/v1/options").json()["samples_format"] == "png"


def test_a_checkpoint_override_is_used_and_then_the_choice_comes_back(server):
    other = infotext_of(server.post("/sdapi/v1/txt2img", json={
        **SMALL, "override_settings": {"sd_model_checkpoint": "second"}}))
    assert other["Model"] == "second"
    assert server.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("first")
    assert infotext_of(server.post("/sdapi/v1/txt2img", json=SMALL))["Model"] == "first"


def test_restore_afterwards_false_keeps_the_settings(server):
    try:
        response = server.post("/sdapi/v1/txt2img", json={
            **SMALL, "override_settings_restore_afterwards": False,
            "override_settings": {"sd_model_checkpoint": "second", "add_model_hash_to_info": False}})
        assert "Model hash" not in infotext_of(response)
        after = infotext_of(server.post("/sdapi/v1/txt2img", json=SMALL))
        assert after["Model"] == "second" and "Model hash" not in after
        options = server.get("/sdapi/v1/options").json()
        assert options["add_model_hash_to_info"] is False and options["sd_model_checkpoint"].startswith("second")
    finally:
        server.post("/sdapi/v1/options", json={"sd_model_checkpoint": "first", "add_model_hash_to_info": True})


@pytest.mark.parametrize("key, value", [("CLIP_stop_at_last_layers", 2), ("sd_model_checkpoint", "second"),
                                        ("sd_vae", "None")])
def test_overrides_to_keep_under_frozen_settings_are_refused_before_the_job(tmp_path, key, value):
    """The job used to run, then the settings save failed: a 500, and the client never got its images."""
    data = data_dir_with_checkpoints(tmp_path, {"first.safetensors": build_tiny_model("sd1"),
                                                "second.safetensors": build_tiny_model("sd1", seed=1)})
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui",
                                                           "--freeze-settings"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        before = client.get("/sdapi/v1/options").json()
        kept = client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {key: value},
                                                      "override_settings_restore_afterwards": False})
        assert kept.status_code == 422, kept.text
        detail = kept.json()["detail"][0]
        assert detail["loc"] == ["body", "override_settings", key] and "frozen" in detail["msg"]
        assert "override_settings_restore_afterwards: true" in detail["msg"]
        assert services.queue.current is None and not services.queue.pending()
        assert client.get("/sdapi/v1/options").json() == before
        once = client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {key: value}})
        assert once.status_code == 200 and len(once.json()["images"]) == 1
    services.shutdown()


@pytest.mark.parametrize("overrides, key", [
    ({"outdir_txt2img_samples": "/tmp/evil"}, "outdir_txt2img_samples"),   # a path: never through the API
    ({"api_enable_requests": False}, "api_enable_requests"),                # a security switch
    ({"no_such_option": 1}, "no_such_option"),
    ({"samples_format": "exe"}, "samples_format"),
    ({"CLIP_stop_at_last_layers": 0}, "CLIP_stop_at_last_layers"),
    ({"sd_model_checkpoint": "../../etc/passwd"}, "sd_model_checkpoint"),
])
def test_bad_overrides_are_refused_naming_the_key(server, overrides, key):
    before = server.get("/sdapi/v1/options").json()
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": overrides})
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "body", "errors"}
    assert body["detail"][0]["loc"] == ["body", "override_settings", key]
    assert server.get("/sdapi/v1/options").json() == before


def test_overrides_are_seen_only_by_the_thread_running_the_request():
    options = Options(None)
    inside, seen_elsewhere = threading.Event(), []
    release = threading.Event()

    def job():
        with options.overridden({"samples_format": "webp"}):
            assert options.samples_format == "webp" and options.get("samples_format") == "webp"
            inside.set()
            release.wait(5)
        assert options.samples_format == "png"

    worker = threading.Thread(target=job)
    worker.start()
    inside.wait(5)
    seen_elsewhere += [options.samples_format, options.as_dict()["samples_format"]]
    release.set()
    worker.join(5)
    assert seen_elsewhere == ["png", "png"]
