"""The A1111 API contract, from payloads recorded in the shape real clients send (tests/fixtures/a1111_payloads).

Each file holds `{client, method, path, body}`; images in bodies are placeholders filled here with small PNGs:
`<png:NAME>` (raw base64), `<data-uri:NAME>` and `<controlnet-title:NAME>` (the title /controlnet/model_list gives).
The responses are checked for what those clients read: status, field names and types, the `info` JSON string with
the keys of A1111's `Processed.js()`, and the `{error, detail, body, errors}` body of a refused request.
"""
from __future__ import annotations

import base64
import copy
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from modules import cmd_args, services as services_module
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_controlnets import build_tiny_controlnet, write_controlnet

PAYLOADS = Path(__file__).parent / "fixtures" / "a1111_payloads"
PAYLOAD_FILES = sorted(path.name for path in PAYLOADS.glob("*.json"))

# A1111's Processed.js(): what clients read from `info` (modules/processing.py in A1111).
PROCESSED_KEYS = {
    "prompt": str, "all_prompts": list, "negative_prompt": str, "all_negative_prompts": list, "seed": int,
    "all_seeds": list, "subseed": int, "all_subseeds": list, "subseed_strength": (int, float), "width": int,
    "height": int, "sampler_name": str, "cfg_scale": (int, float), "steps": int, "batch_size": int,
    "restore_faces": bool, "sd_model_name": str, "sd_model_hash": str, "seed_resize_from_w": int,
    "seed_resize_from_h": int, "denoising_strength": (int, float, type(None)), "extra_generation_params": dict,
    "index_of_first_image": int, "infotexts": list, "styles": list, "job_timestamp": str, "clip_skip": int,
    "is_using_inpainting_conditioning": bool, "version": str,
}


def _photo() -> Image.Image:
    image = Image.new("RGB", (64, 64), (90, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, 32, 32), fill=(250, 250, 250))
    draw.rectangle((32, 32, 58, 58), fill=(20, 20, 20))
    return image


def _mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((32, 0, 63, 63), fill=255)
    return mask


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    (data / "models" / "ControlNet").mkdir(parents=True, exist_ok=True)
    write_controlnet(build_tiny_controlnet("sd1"), data / "models" / "ControlNet" / "control_v11p_sd15_canny.safetensors")
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--api", "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd1"}).status_code == 200
        yield client
    services.shutdown()


def load(server, name: str) -> dict:
    """A payload file with its placeholders filled."""
    recorded = json.loads((PAYLOADS / name).read_text(encoding="utf-8"))
    images = {"photo": _b64(_photo()), "mask": _b64(_mask())}
    titles = server.get("/controlnet/model_list").json()["model_list"]

    def fill(value):
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [fill(item) for item in value]
        if isinstance(value, str) and (match := re.fullmatch(r"<(png|data-uri|controlnet-title):(.+)>", value)):
            kind, name = match.groups()
            if kind == "controlnet-title":
                return next(title for title in titles if title.startswith(name + " ["))
            return images[name] if kind == "png" else "data:image/png;base64," + images[name]
        return value

    recorded["body"] = fill(recorded["body"])
    return recorded


def send(server, recorded: dict):
    return server.request(recorded["method"], recorded["path"], json=recorded["body"])


# ---------------------------------------------------------------- the responses clients read

def check_generation(response, sent: dict) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    assert isinstance(body["images"], list) and all(isinstance(image, str) for image in body["images"])

    parameters = body["parameters"]                      # the request echoed, with A1111's field names
    full_schema = json.loads((PAYLOADS / "txt2img_full_schema.json").read_text(encoding="utf-8"))["body"]
    assert set(full_schema) <= set(parameters)
    for key, value in sent.items():
        if key not in ("init_images", "mask", "alwayson_scripts"):
            assert parameters[key] == value, key

    assert isinstance(body["info"], str)                 # a JSON *string*, as A1111 returns it
    info = json.loads(body["info"])
    for key, kind in PROCESSED_KEYS.items():
        assert key in info and isinstance(info[key], kind), (key, info.get(key))
    count = sent.get("batch_size", 1) * sent.get("n_iter", 1)
    assert len(info["all_seeds"]) == len(info["all_subseeds"]) == len(info["all_prompts"]) == count
    assert all(isinstance(seed, int) for seed in info["all_seeds"])
    assert re.fullmatch(r"\d{14}", info["job_timestamp"])
    if sent.get("seed", -1) != -1:
        assert info["seed"] == sent["seed"]
    assert info["sd_model_name"] == "tiny-sd1" and info["prompt"] == sent["prompt"]

    # One infotext per returned picture (grid first when there is one), each in its PNG's parameters chunk;
    # ControlNet maps come after them.
    assert len(info["infotexts"]) == info["index_of_first_image"] + count <= len(body["images"])
    for encoded, infotext in zip(body["images"], info["infotexts"]):
        image = decode(encoded)
        assert image.format == "PNG" and image.info["parameters"] == infotext
    first = decode(body["images"][info["index_of_first_image"]])
    scale = sent.get("hr_scale", 1) if sent.get("enable_hr") else 1
    assert first.size == (int(sent["width"] * scale), int(sent["height"] * scale))


def check_options(server, response, sent: dict) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {}
    current = server.get("/sdapi/v1/options").json()
    for key, value in sent.items():
        assert current[key].startswith(value.removesuffix(".safetensors")) if key == "sd_model_checkpoint" \
            else current[key] == value


@pytest.mark.parametrize("name", PAYLOAD_FILES)
def test_recorded_payload_is_answered_in_a1111_shape(server, name):
    recorded = load(server, name)
    response = send(server, recorded)
    if recorded["path"].endswith("/options"):
        check_options(server, response, recorded["body"])
    else:
        check_generation(response, recorded["body"])


def test_sdwebuiapi_sampler_and_negative_prompt_are_used(server):
    recorded = load(server, "txt2img_sdwebuiapi.json")
    info = json.loads(send(server, recorded).json()["info"])
    assert info["sampler_name"] == "Euler a" and info["negative_prompt"] == "fog"
    assert "Sampler: Euler a," in info["infotexts"][0]


def test_full_schema_defaults_take_sampler_index(server):
    info = json.loads(send(server, load(server, "txt2img_full_schema.json")).json()["info"])
    assert info["sampler_name"] == "Euler" and info["denoising_strength"] is None


def test_hires_batch_overrides_are_applied(server):
    info = json.loads(send(server, load(server, "txt2img_hires_batch_overrides.json")).json()["info"])
    assert info["clip_skip"] == 2 and info["all_seeds"] == [77, 78, 79, 80]
    assert "Schedule type: Karras" in info["infotexts"][-1] and "Hires upscale: 1.5" in info["infotexts"][-1]
    assert info["denoising_strength"] == 0.6


def test_controlnet_payloads_append_the_map_and_record_the_unit(server):
    for name in ("txt2img_controlnet_sdwebuiapi.json", "img2img_controlnet_extension_wiki.json"):
        body = send(server, load(server, name)).json()
        info = json.loads(body["info"])
        assert len(body["images"]) == len(info["infotexts"]) + 1          # the annotation map, after the image
        assert "ControlNet 0: \"Module: canny, Model: control_v11p_sd15_canny [" in info["infotexts"][0]
        assert "ControlNet 1" not in info["infotexts"][0]                 # the disabled unit is not used


def test_inpaint_payload_reports_its_settings(server):
    info = json.loads(send(server, load(server, "img2img_inpaint_sdwebuiapi.json")).json()["info"])
    assert info["denoising_strength"] == 0.75
    assert "Mask blur: 4" in info["infotexts"][0] and "Inpaint area: Only masked" in info["infotexts"][0]


# ---------------------------------------------------------------- listings clients read

LISTINGS = {
    "/sdapi/v1/sd-models": {"title", "model_name", "hash", "sha256", "filename", "config"},
    "/sdapi/v1/samplers": {"name", "aliases", "options"},
    "/sdapi/v1/upscalers": {"name", "model_name", "model_path", "model_url", "scale"},
    "/sdapi/v1/latent-upscale-modes": {"name"},
}


@pytest.mark.parametrize("path", list(LISTINGS))
def test_listings_have_a1111_fields(server, path):
    items = server.get(path).json()
    assert isinstance(items, list) and items
    for item in items:
        assert LISTINGS[path] <= set(item), item


def test_sd_models_entry_and_the_current_option_agree(server):
    models = server.get("/sdapi/v1/sd-models").json()
    assert [model["model_name"] for model in models] == ["tiny-sd1"]
    model = models[0]
    assert model["title"] == f"tiny-sd1.safetensors [{model['hash']}]" and model["sha256"].startswith(model["hash"])
    assert Path(model["filename"]).name == "tiny-sd1.safetensors" and model["config"] is None
    options = server.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == model["title"]
    assert isinstance(options["CLIP_stop_at_last_layers"], int) and options["samples_format"] == "png"


def test_progress_when_idle_is_a1111_shaped(server):
    body = server.get("/sdapi/v1/progress").json()
    assert {"progress", "eta_relative", "state", "current_image", "textinfo"} <= set(body)
    assert {"skipped", "interrupted", "job", "job_count", "job_timestamp", "job_no", "sampling_step",
            "sampling_steps"} <= set(body["state"])
    assert body["progress"] == 0


# ---------------------------------------------------------------- refused requests

def _broken(server, name: str, change) -> dict:
    recorded = load(server, name)
    recorded = copy.deepcopy(recorded)
    change(recorded["body"])
    return recorded


BROKEN = {
    "width as text": ("txt2img_full_schema.json", lambda b: b.update(width="512"), ["body", "width"]),
    "steps zero": ("txt2img_sdwebuiapi.json", lambda b: b.update(steps=0), ["body", "steps"]),
    "unknown sampler": ("txt2img_sdwebuiapi.json", lambda b: b.update(sampler_name="Nope"), ["body", "sampler_name"]),
    "mask not base64": ("img2img_inpaint_sdwebuiapi.json", lambda b: b.update(mask="not base64!!"), ["body", "mask"]),
    "missing controlnet": ("txt2img_controlnet_sdwebuiapi.json",
                           lambda b: b["alwayson_scripts"]["ControlNet"]["args"][0].update(model="gone [00000000]"),
                           ["body", "alwayson_scripts", "ControlNet", "args", 0, "model"]),
    "unknown override": ("txt2img_hires_batch_overrides.json",
                         lambda b: b["override_settings"].update(sd_model_checkpoint="gone.safetensors"),
                         ["body", "override_settings", "sd_model_checkpoint"]),
    "bad option value": ("options_post.json", lambda b: b.update(samples_format="bmp"), ["body", "samples_format"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_refused_payloads_get_a1111_error_bodies(server, case):
    name, change, loc = BROKEN[case]
    response = send(server, _broken(server, name, change))
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "body", "errors"}
    assert isinstance(body["error"], str) and isinstance(body["errors"], str) and body["body"] == ""
    assert isinstance(body["detail"], list) and body["detail"]
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type"} and isinstance(item["msg"], str) and item["msg"]
    # Script titles match case-insensitively (A1111), so the loc may spell the script's title either way.
    def spelled(parts):
        return [part.lower() if isinstance(part, str) else part for part in parts]
    assert [spelled(item["loc"]) for item in body["detail"]] == [spelled(loc)]
    assert ".".join(str(part) for part in spelled(loc)) in body["errors"].lower()
