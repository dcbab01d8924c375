"""The /sdapi/v1 API as an A1111 client sees it, on tiny checkpoints, in-process."""
from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
from PIL import Image

from modules import cmd_args, services as services_module
from modules.output.infotext import parse_infotext
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_safetensors

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), {
        "tiny-sd1.safetensors": build_tiny_model("sd1"), "other-sd1.safetensors": build_tiny_model("sd1", seed=1)})
    args = cmd_args.parse_args(["--data-dir", str(data), "--api", "--nowebui", "--gradio-auth", "me:secret"])
    services = services_module.create(args)
    from webui import create_app

    with app_client(create_app(services)) as client:
        client.services = services
        yield client
    services.shutdown()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_txt2img_response_is_a1111_shaped(server):
    response = server.post("/sdapi/v1/txt2img", json={"prompt": "a red cube", "seed": 42, **SMALL})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    image = decode(body["images"][0])
    assert image.size == (64, 64)
    parsed = parse_infotext(image.info["parameters"])
    assert parsed["Prompt"] == "a red cube" and parsed["Seed"] == "42" and parsed["Steps"] == "2"
    assert parsed["Sampler"] == "Euler"                 # A1111's API default comes from sampler_index
    info = json.loads(body["info"])                       # a JSON *string*, as A1111 returns it
    assert info["seed"] == 42 and info["all_seeds"] == [42] and info["width"] == 64
    assert body["parameters"]["prompt"] == "a red cube"
    assert not list(server.services.paths.outputs.rglob("*.png"))   # save_images defaults to False


def test_same_seed_same_pixels_over_the_api(server):
    payload = {"prompt": "a cat", "seed": 7, "sampler_name": "DPM++ 2M Karras", **SMALL}
    first = server.post("/sdapi/v1/txt2img", json=payload).json()["images"][0]
    second = server.post("/sdapi/v1/txt2img", json=payload).json()["images"][0]
    other = server.post("/sdapi/v1/txt2img", json={**payload, "seed": 8}).json()["images"][0]
    assert decode(first).tobytes() == decode(second).tobytes()
    assert decode(first).tobytes() != decode(other).tobytes()
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in decode(first).info["parameters"]


def test_save_images_writes_files_and_grid(server):
    body = server.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 5, "batch_size": 2, "save_images": True,
                                                  **SMALL}).json()
    assert len(body["images"]) == 3                        # grid first, then both images
    assert json.loads(body["info"])["all_seeds"] == [5, 6]
    outputs = server.services.paths.outputs
    samples = sorted(p.name for p in (outputs / "txt2img-images").rglob("*.png"))
    assert any(name.endswith("-5.png") for name in samples) and any(name.endswith("-6.png") for name in samples)
    assert list((outputs / "txt2img-grids").rglob("*.png"))


@pytest.mark.parametrize("payload, field", [
    ({"width": 7}, "width"),
    ({"width": 513}, "width"),
    ({"height": 0}, "height"),
    ({"width": "512"}, "width"),
    ({"steps": 0}, "steps"),
    ({"steps": 1.5}, "steps"),
    ({"cfg_scale": "nan"}, "cfg_scale"),
    ({"seed": 2**64}, "seed"),
    ({"subseed_strength": 1.1}, "subseed_strength"),
    ({"sampler_name": "Nonexistent sampler"}, "sampler_name"),
    ({"scheduler": "Bogus"}, "scheduler"),
    ({"override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}, "sd_model_checkpoint"),
    ({"override_settings": {"sd_model_checkpoint": "missing.safetensors"}}, "sd_model_checkpoint"),
    ({"override_settings": {"outdir_txt2img_samples": "/tmp"}}, "outdir_txt2img_samples"),
    ({"enable_hr": True, "hr_upscaler": "Sparkle 9x"}, "hr_upscaler"),
    ({"alwayson_scripts": {"Dynamic Prompts": {"args": []}}}, "alwayson_scripts"),
    ({"alwayson_scripts": {"controlnet": {"args": [{"module": "canny", "model": "missing [0000]"}]}}},
     "model"),
    ({"width": 2048, "height": 2048, "batch_size": 8}, "batch_size"),
])
def test_bad_requests_get_422_naming_the_field(server, payload, field):
    response = server.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, **payload})
    assert response.status_code == 422, response.text
    assert field in json.dumps(response.json()["detail"])
    assert server.get("/sdapi/v1/samplers").status_code == 200    # still serving


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e309"])
def test_non_finite_numbers_rejected(server, literal):
    raw = '{"prompt": "x", "width": 64, "height": 64, "steps": 2, "cfg_scale": %s}' % literal
    response = server.post("/sdapi/v1/txt2img", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "cfg_scale" in response.text


def test_sd_models_and_switching_by_title_hash_and_name(server):
    models = server.get("/sdapi/v1/sd-models").json()
    assert {m["model_name"] for m in models} == {"tiny-sd1", "other-sd1"}
    for key in ("title", "model_name", "hash", "sha256", "filename", "config"):
        assert key in models[0]
    for selector in ("other-sd1", "tiny-sd1.safetensors"):
        response = server.post("/sdapi/v1/options", json={"sd_model_checkpoint": selector})
        assert response.status_code == 200, response.text
        current = server.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
        assert current.startswith(selector.removesuffix(".safetensors"))
    listed = {m["model_name"]: m for m in server.get("/sdapi/v1/sd-models").json()}
    other = listed["other-sd1"]
    assert other["hash"] and other["title"] == f"other-sd1.safetensors [{other['hash']}]"
    assert server.post("/sdapi/v1/options", json={"sd_model_checkpoint": other["hash"]}).status_code == 200
    assert server.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == other["title"]


def test_options_validation(server):
    assert server.post("/sdapi/v1/options", json={"sd_model_checkpoint": "../../etc/passwd"}).status_code == 422
    response = server.post("/sdapi/v1/options", json={"outdir_txt2img_samples": "/etc"})
    assert response.status_code == 422 and "outdir_txt2img_samples" in response.text
    assert server.get("/sdapi/v1/options").json()["outdir_txt2img_samples"] == "outputs/txt2img-images"
    assert server.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}).status_code == 200
    assert server.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    assert server.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": "two"}).status_code == 422
    server.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})


def test_refresh_checkpoints_finds_new_files(server):
    folder = server.services.paths.checkpoints
    write_safetensors(build_tiny_model("sd1", seed=2), folder / "late.safetensors")
    assert "late" not in {m["model_name"] for m in server.get("/sdapi/v1/sd-models").json()}
    assert server.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    assert "late" in {m["model_name"] for m in server.get("/sdapi/v1/sd-models").json()}


def test_samplers_and_schedulers_lists(server):
    names = [s["name"] for s in server.get("/sdapi/v1/samplers").json()]
    assert names[0] == "DPM++ 2M" and "Euler a" in names and "DDIM" in names
    labels = [s["label"] for s in server.get("/sdapi/v1/schedulers").json()]
    assert labels[0] == "Automatic" and "Karras" in labels


def test_cmd_flags_hide_secrets(server):
    flags = server.get("/sdapi/v1/cmd-flags").json()
    assert flags["api"] is True
    assert "secret" not in json.dumps(flags)


def test_png_info_round_trip(server):
    image_b64 = server.post("/sdapi/v1/txt2img", json={"prompt": "a, b: c", "seed": 3, **SMALL}).json()["images"][0]
    body = server.post("/sdapi/v1/png-info", json={"image": image_b64}).json()
    assert body["parameters"]["Prompt"] == "a, b: c" and body["parameters"]["Seed"] == "3"
    assert body["info"].startswith("a, b: c\n")
    bad = server.post("/sdapi/v1/png-info", json={"image": base64.b64encode(b"<html>hi</html>").decode()})
    assert bad.status_code == 422 and "image" in bad.text


def test_progress_and_interrupt_of_a_running_job(server):
    result = {}

    def generate():
        result["response"] = server.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, "width": 64,
                                                                   "height": 64, "steps": 400,
                                                                   "force_task_id": "long-job"})

    thread = threading.Thread(target=generate)
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        progress = server.get("/sdapi/v1/progress", params={"id": "long-job"})
        if progress.status_code == 200 and progress.json()["current_image"]:   # a preview every 10 steps
            break
        time.sleep(0.05)
    body = progress.json()
    assert body["status"] == "running" and 0 < body["progress"] < 1 and body["state"]["sampling_step"] >= 10
    preview = Image.open(io.BytesIO(base64.b64decode(body["current_image"])))
    assert preview.size == (8, 8)   # no TAESD decoder: the latent approximation, a pixel per latent
    assert server.post("/sdapi/v1/interrupt", params={"id": "long-job"}).json() == {"interrupted": True}
    thread.join(120)
    assert result["response"].status_code == 200
    info = json.loads(result["response"].json()["info"])
    assert info["all_seeds"] == [1]
    job = server.services.queue.get("long-job")
    assert job.state == "interrupted" and job.step < 400
    assert server.get("/sdapi/v1/progress").json()["progress"] == 0.0      # nothing running now


def test_api_auth_and_origin_guard(tmp_path):
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--nowebui", "--api-auth", "user:pw"])
    services = services_module.create(args)
    from webui import create_app

    with app_client(create_app(services)) as client:
        assert client.get("/sdapi/v1/sd-models").status_code == 401
        assert client.get("/sdapi/v1/sd-models", auth=("user", "wrong")).status_code == 401
        assert client.get("/sdapi/v1/sd-models", auth=("user", "pw")).status_code == 200
        evil = client.post("/sdapi/v1/options", json={}, auth=("user", "pw"),
                           headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
        # no checkpoint at all: generation says where to put one, and the server keeps serving
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL}, auth=("user", "pw"))
        assert response.status_code == 409 and "Stable-diffusion" in response.json()["detail"]
    services.shutdown()


def test_oversized_bodies_refused(server, monkeypatch):
    from modules.api import middleware

    monkeypatch.setattr(middleware, "MAX_BODY_BYTES", 100)
    response = server.post("/sdapi/v1/txt2img", json={"prompt": "x" * 200})
    assert response.status_code == 413
    monkeypatch.undo()
    assert server.get("/sdapi/v1/samplers").status_code == 200


def test_prediction_override_reloads_the_model(server):
    assert server.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL,
                                                  "override_settings": {"sd_model_checkpoint": "tiny-sd1"}}).is_success
    assert server.services.models.current.spec.prediction_type == "epsilon"
    override = {"sd_model_prediction_overrides": {"tiny-sd1.safetensors": "v_prediction"}}
    assert server.post("/sdapi/v1/options", json=override).status_code == 200
    assert server.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **SMALL,
                                                  "override_settings": {"sd_model_checkpoint": "tiny-sd1"}}).is_success
    model = server.services.models.current
    assert (model.spec.prediction_type, model.spec.prediction_source) == ("v_prediction", "override")
    assert model.pipeline.scheduler.prediction_type == "v_prediction"   # the sampler reads v
    server.post("/sdapi/v1/options", json={"sd_model_prediction_overrides": {}})


@pytest.mark.parametrize("value", [{"tiny-sd1.safetensors": "x-prediction"}, {"tiny-sd1.safetensors": 3},
                                   {"tiny-sd1.safetensors": {"nested": [1]}}, {"x" * 300: "epsilon"}])
def test_prediction_overrides_take_only_prediction_types(server, value):
    response = server.post("/sdapi/v1/options", json={"sd_model_prediction_overrides": value})
    assert response.status_code == 422 and "sd_model_prediction_overrides" in response.text
    assert server.get("/sdapi/v1/options").json()["sd_model_prediction_overrides"] == {}


def test_infotext_field_fills_what_the_request_did_not_set(server):
    text = "a lighthouse at dusk\nNegative prompt: fog\nSteps: 3, Sampler: Euler a, CFG scale: 5, Seed: 77, Size: 72x64"
    body = server.post("/sdapi/v1/txt2img", json={"infotext": text, "steps": 2}).json()
    parsed = parse_infotext(decode(body["images"][0]).info["parameters"])
    assert (parsed["Prompt"], parsed["Negative prompt"], parsed["Sampler"], parsed["CFG scale"], parsed["Seed"],
            parsed["Size-1"], parsed["Size-2"]) == ("a lighthouse at dusk", "fog", "Euler a", "5.0", "77", "72", "64")
    assert parsed["Steps"] == "2"                                  # set explicitly: the request wins
