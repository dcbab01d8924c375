"""Robustness E: images and metadata (what is not an image, decompression bombs, megabytes of PNG text, markup in
parameters, malformed and out-of-range infotext)."""
from __future__ import annotations

import io
import time
import zipfile

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from tests.fixtures.png_bombs import png_declaring
from tests.robustness.checks import (SMALL, assert_names_field, assert_still_serving, b64, info_of, opened_files,
                                     photo, png)


# ---------------------------------------------------------------- E. images and metadata

def _image_field_requests(image: str) -> dict:
    """Every request field that takes an image: (path, body, field the 422 must name)."""
    return {
        "init image": ("/sdapi/v1/img2img", {**SMALL, "save_images": True, "init_images": [image]},
                       ("init_images", 0)),
        "mask": ("/sdapi/v1/img2img", {**SMALL, "save_images": True, "init_images": [photo()], "mask": image},
                 ("mask",)),
        "control image": ("/sdapi/v1/txt2img", {**SMALL, "save_images": True, "alwayson_scripts": {"controlnet": {"args": [
            {"input_image": image, "module": "canny", "model": "None"}]}}}, ("input_image",)),
        "extras": ("/sdapi/v1/extra-single-image", {"image": image, "upscaler_1": "Lanczos"}, ("image",)),
        "extras batch": ("/sdapi/v1/extra-batch-images", {"imageList": [{"data": image, "name": "a.png"}],
                                                          "upscaler_1": "Lanczos"}, ("imageList", 0, "data")),
        "png info": ("/sdapi/v1/png-info", {"image": image}, ("image",)),
        "detect": ("/controlnet/detect", {"controlnet_module": "canny", "controlnet_input_images": [image]},
                   ("controlnet_input_images", 0)),
    }


def zip_named_png() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image.png", png(Image.new("RGB", (8, 8))))
    return buffer.getvalue()


NOT_IMAGES = {
    "html": b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="8" height="8"/></svg>',
    "zip": zip_named_png(),
}


@pytest.mark.parametrize("kind", list(NOT_IMAGES))
@pytest.mark.parametrize("target", list(_image_field_requests("")))
def test_e31_html_svg_and_zip_as_images_are_422_and_nothing_is_stored(server, kind, target):
    outputs = server.services.paths.outputs
    before = sorted(outputs.rglob("*"))
    for value in (b64(NOT_IMAGES[kind]), f"data:image/png;base64,{b64(NOT_IMAGES[kind])}"):
        path, body, field = _image_field_requests(value)[target]
        response = server.post(path, json=body)
        assert_names_field(response, *field)
        assert "not a supported image" in response.text
    assert sorted(outputs.rglob("*")) == before


@pytest.mark.parametrize("size", [20000, 10000])
@pytest.mark.parametrize("target", list(_image_field_requests("")))
def test_e32_tiny_files_declaring_huge_images_are_422_without_decoding(server, monkeypatch, size, target):
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    path, body, field = _image_field_requests(b64(png_declaring(size, size)))[target]
    started = time.monotonic()
    response = server.post(path, json=body)
    assert time.monotonic() - started < 2
    assert_names_field(response, *field)
    assert "limit" in response.text
    assert (size, size) not in decoded                 # refused from the header: no pixel buffer was made


@pytest.mark.parametrize("compressed", [True, False])
def test_e34_megabytes_of_png_text_are_refused_as_metadata_too_large(server, compressed):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "Steps: 20, " * 500_000, zip=compressed)    # 5.5 MB
    image = b64(png(Image.new("RGB", (8, 8)), pnginfo=info))
    started = time.monotonic()
    response = server.post("/sdapi/v1/png-info", json={"image": image})
    assert time.monotonic() - started < 5
    assert_names_field(response, "image")
    assert "metadata too large" in response.text
    # As an init image only the pixels matter: the text is refused or ignored, never a 5xx.
    assert server.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [image]}).status_code in (200, 422)
    assert_still_serving(server)


def test_e34_markup_in_parameters_comes_back_as_json_data(server):
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"{hostile}\nSteps: 2, Sampler: Euler, Seed: 1, Size: 8x8")
    response = server.post("/sdapi/v1/png-info", json={"image": b64(png(Image.new("RGB", (8, 8)), pnginfo=info))})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["parameters"]["Prompt"] == hostile and body["info"].startswith(hostile)


@pytest.mark.parametrize("text", [
    "a cat\nSteps: 2, Face restoration: , Seed: 5, Size: 512x",
    "a cat\nSteps: abc, Sampler: Euler a, Seed: 5, CFG scale: nan",
    'a cat\nSteps: 2, Seed: 5, Lora hashes: "a: 1, Model: "x\\',
    'a cat\nSteps: 2, Seed: 5, Model: ../../../outside/secret.safetensors, Model hash: 0000000000, VAE: ../x.pt',
    "a cat\nSteps: 2, Seed: 5, Size: 64x64, " + "Junk: " * 200_000,
    "Negative prompt:\n" * 50_000 + "Steps: 2, Seed: 5, Sampler: Euler",
    ":" * 1_000_000,
])
def test_e35_malformed_infotext_fills_what_it_can_quickly_and_never_fails(server, outside, text):
    """Fields set in the request win; from the pasted infotext what parses is used, the rest is ignored."""
    started = time.monotonic()
    with opened_files() as opened:
        response = server.post("/sdapi/v1/txt2img", json={**SMALL, "infotext": text})
    assert time.monotonic() - started < 10
    info = info_of(response)
    assert (info["width"], info["height"], info["steps"]) == (64, 64, 2)
    if "Seed: 5" in text:
        assert info["seed"] == 5
    assert info["sd_model_name"] == "tiny-sd1"
    assert not [path for path in opened if path.startswith(str(outside))]


@pytest.mark.parametrize("text, field", [
    ("a cat\nSteps: 2, Seed: 5, Size: 99999x99999", "width"),
    ("a cat\nSteps: 1000000000, Seed: 5, Size: 64x64", "steps"),
    ("a cat\nSteps: 2, Seed: 18446744073709551616, Size: 64x64", "seed"),
    ("a cat\nSteps: 2, Seed: 5, Size: 64x64, Sampler: ../../x", "sampler_name"),
])
def test_e35_infotext_values_out_of_range_are_422_naming_the_field(server, text, field):
    assert_names_field(server.post("/sdapi/v1/txt2img", json={"infotext": text}), field)


@pytest.mark.parametrize("value", [5, ["a"], {"Steps": 2}])
def test_e35_infotext_that_is_not_text_is_422(server, value):
    assert_names_field(server.post("/sdapi/v1/txt2img", json={**SMALL, "infotext": value}), "infotext")
