"""/sdapi/v1/img2img, hires fix and refiner fields, Extras and the upscaler listings, as A1111 clients use them."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules import cmd_args, services as services_module
from modules.output.infotext import parse_infotext
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.pictures import b64
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.png_bombs import png_declaring

SMALL = {"width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), {
        "tiny-sd1.safetensors": build_tiny_model("sd1"), "tiny-sd1-b.safetensors": build_tiny_model("sd1", seed=3)})
    args = cmd_args.parse_args(["--data-dir", str(data), "--api", "--nowebui"])
    services = services_module.create(args)
    services.options.update({"sd_checkpoints_limit": 4})
    from webui import create_app

    with app_client(create_app(services)) as client:
        client.services = services
        yield client
    services.shutdown()


def decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def photo(width: int = 64, height: int = 64) -> Image.Image:
    image = Image.new("RGB", (width, height), (200, 120, 40))
    ImageDraw.Draw(image).ellipse((8, 8, width // 2, height // 2), fill=(10, 40, 220))
    return image


def right_half_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((32, 0, 63, 63), fill=255)
    return mask


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def img2img(server, **payload):
    body = {"prompt": "a vase", "seed": 3, "init_images": [b64(photo())], **SMALL, **payload}
    return server.post("/sdapi/v1/img2img", json=body)


def test_img2img_is_a1111_shaped(server):
    response = img2img(server, denoising_strength=0.5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    image = decode(body["images"][0])
    assert image.size == (64, 64)
    assert parse_infotext(image.info["parameters"])["Denoising strength"] == "0.5"
    assert body["parameters"]["init_images"] is None       # not echoed back, as A1111
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.5 and info["all_seeds"] == [3]


def test_inpainting_with_the_api_defaults_keeps_the_unmasked_half(server):
    # API defaults: fill, only masked, padding 0 (A1111's, not the UI's)
    response = img2img(server, mask="data:image/png;base64," + b64(right_half_mask()), mask_blur=0,
                       denoising_strength=0.9)
    assert response.status_code == 200, response.text
    image = decode(response.json()["images"][0])
    assert np.array_equal(pixels(image)[:, :32], pixels(photo())[:, :32])
    parsed = parse_infotext(image.info["parameters"])
    assert parsed["Masked content"] == "fill" and parsed["Inpaint area"] == "Only masked"


def test_include_init_images_returns_them_too(server):
    body = img2img(server, include_init_images=True).json()
    assert len(body["images"]) == 2 and decode(body["images"][1]).size == (64, 64)


@pytest.mark.parametrize("image, field", [
    (base64.b64encode(b"this is not an image").decode(), "init_images"),
    (b64(photo())[:200], "init_images"),                            # truncated
    (base64.b64encode(png_declaring(20000, 20000)).decode(), "init_images"),        # decompression bomb
    ("https://example.com/cat.png", "init_images"),                 # URLs are not fetched
])
def test_bad_init_images_get_422_naming_the_field(server, image, field):
    response = img2img(server, init_images=[image])
    assert response.status_code == 422, response.text
    assert field in json.dumps(response.json()["detail"])
    assert server.get("/sdapi/v1/samplers").status_code == 200


@pytest.mark.parametrize("make", [
    lambda: Image.fromarray(np.full((64, 64), 40000, np.uint16)),     # 16-bit greyscale
    lambda: photo().convert("CMYK"),
    lambda: photo().convert("RGBA"),
    lambda: photo().convert("P"),
])
def test_odd_image_modes_are_converted(server, make):
    image = make()
    fmt = "JPEG" if image.mode == "CMYK" else "PNG"
    response = img2img(server, init_images=[b64(image, fmt)])
    assert response.status_code == 200, response.text
    assert decode(response.json()["images"][0]).size == (64, 64)


def test_an_animated_gif_uses_its_first_frame(server):
    frames = [photo(), photo().transpose(Image.FLIP_TOP_BOTTOM)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    response = img2img(server, init_images=[base64.b64encode(buffer.getvalue()).decode()])
    assert response.status_code == 200, response.text


def test_a_mask_of_another_size_is_stretched(server):
    small_mask = right_half_mask().resize((16, 16), Image.NEAREST)
    response = img2img(server, mask=b64(small_mask), mask_blur=0, inpaint_full_res=False)
    assert response.status_code == 200, response.text
    image = decode(response.json()["images"][0])
    assert np.array_equal(pixels(image)[:, :32], pixels(photo())[:, :32])


def test_img2img_without_images_is_a_422(server):
    response = server.post("/sdapi/v1/img2img", json={"prompt": "x", **SMALL})
    assert response.status_code == 422 and "init_images" in response.text


def test_hires_fix_over_the_api(server):
    response = server.post("/sdapi/v1/txt2img", json={
        "prompt": "a hill", "seed": 1, **SMALL, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent",
        "denoising_strength": 0.5})
    assert response.status_code == 200, response.text
    image = decode(response.json()["images"][0])
    assert image.size == (128, 128)
    assert parse_infotext(image.info["parameters"])["Hires upscale"] == "2"


def test_refiner_over_the_api(server):
    response = server.post("/sdapi/v1/txt2img", json={
        "prompt": "a hill", "seed": 1, **SMALL, "refiner_checkpoint": "tiny-sd1-b", "refiner_switch_at": 0.5,
        "override_settings": {"sd_model_checkpoint": "tiny-sd1"}})
    assert response.status_code == 200, response.text
    parsed = parse_infotext(decode(response.json()["images"][0]).info["parameters"])
    assert parsed["Refiner"].startswith("tiny-sd1-b") and parsed["Refiner switch at"] == "0.5"


def test_scripts_take_a1111_positional_args(server):
    listed = server.get("/sdapi/v1/scripts").json()["img2img"]   # then scripts/ and extensions' ones
    assert listed[:4] == ["loopback", "outpainting mk2", "poor man's outpainting", "prompt matrix"]   # A1111's order
    assert "sd upscale" in listed
    assert listed[-1] == "controlnet" and "prompt suffix" in listed
    lanczos = server.get("/sdapi/v1/upscalers").json()
    index = [item["name"] for item in lanczos].index("Lanczos")
    response = img2img(server, script_name="sd upscale", script_args=["", 8, index, 2.0], denoising_strength=0.2)
    assert response.status_code == 200, response.text
    assert decode(response.json()["images"][0]).size == (128, 128)
    loop = img2img(server, script_name="Loopback", script_args=[2, 0.4, "Linear", False])
    assert loop.status_code == 200 and len(loop.json()["images"]) == 2   # one per loop (no grid unsaved)
    bad = img2img(server, script_name="Loopback", script_args=[200])
    assert bad.status_code == 422 and "loops" in bad.text


def test_upscaler_and_latent_mode_listings(server):
    names = [item["name"] for item in server.get("/sdapi/v1/upscalers").json()]
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    modes = [item["name"] for item in server.get("/sdapi/v1/latent-upscale-modes").json()]
    assert modes[0] == "Latent" and "Latent (nearest-exact)" in modes
    restorers = server.get("/sdapi/v1/face-restorers").json()
    assert {item["name"] for item in restorers} == {"CodeFormer", "GFPGAN"}


def test_extra_single_and_batch_images(server):
    source = photo(40, 30)
    source.info["parameters"] = "kept"
    single = server.post("/sdapi/v1/extra-single-image", json={
        "image": b64(source), "upscaling_resize": 2, "upscaler_1": "Lanczos"})
    assert single.status_code == 200, single.text
    assert decode(single.json()["image"]).size == (80, 60)
    assert "Postprocess upscale by: 2" in single.json()["html_info"]
    batch = server.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": b64(source), "name": "a.png"}, {"data": b64(photo()), "name": "b.png"}],
        "resize_mode": 1, "upscaling_resize_w": 96, "upscaling_resize_h": 96, "upscaler_1": "Nearest"})
    assert batch.status_code == 200, batch.text
    assert [decode(item).size for item in batch.json()["images"]] == [(96, 96), (96, 96)]
    assert not list(server.services.paths.outputs.rglob("extras-images/*"))   # the API does not save


def test_extras_bad_input_is_named(server):
    response = server.post("/sdapi/v1/extra-single-image", json={"image": b64(photo()), "upscaler_1": "Nope"})
    assert response.status_code == 422 and "upscaler_1" in response.text
    response = server.post("/sdapi/v1/extra-single-image", json={"image": "bm90IGFuIGltYWdl"})
    assert response.status_code == 422 and "image" in response.text
