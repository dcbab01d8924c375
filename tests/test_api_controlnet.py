"""The sd-webui-controlnet extension's API as its clients use it: alwayson_scripts units and /controlnet/*."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules import cmd_args, services as services_module
from modules.output.infotext import parse_infotext
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.pictures import b64
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_controlnets import build_tiny_controlnet, write_controlnet

SMALL = {"width": 64, "height": 64, "steps": 3, "seed": 4, "prompt": "a street"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), {
        "tiny-sd1.safetensors": build_tiny_model("sd1"), "tiny-sdxl.safetensors": build_tiny_model("sdxl")})
    folder = data / "models" / "ControlNet"
    folder.mkdir(parents=True, exist_ok=True)
    write_controlnet(build_tiny_controlnet("sd1"), folder / "control_v11p_sd15_canny.safetensors")
    write_controlnet(build_tiny_controlnet("sdxl"), folder / "diffusers_xl_canny_small.safetensors",
                     layout="diffusers")
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
    image = Image.new("RGB", (width, height), (90, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, width // 2, height // 2), fill=(250, 250, 250))
    draw.rectangle((width // 2, height // 2, width - 6, height - 6), fill=(20, 20, 20))
    return image


def canny_unit(**fields) -> dict:
    """A unit as the extension's API examples write it (legacy input_image, names for the enums)."""
    return {"input_image": b64(photo()), "module": "canny", "model": "control_v11p_sd15_canny [00000000]",
            "weight": 1.0, "resize_mode": "Crop and Resize", "processor_res": 64, "threshold_a": 100,
            "threshold_b": 200, "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": "Balanced",
            "pixel_perfect": False, "lowvram": False, **fields}


def txt2img(server, units, **fields):
    return server.post("/sdapi/v1/txt2img", json={**SMALL, **fields,
                                                 "alwayson_scripts": {"ControlNet": {"args": units}}})


def test_routes_answer_in_the_extensions_shapes(server):
    assert server.get("/controlnet/version").json() == {"version": 2}
    models = server.get("/controlnet/model_list").json()["model_list"]
    assert any(title.startswith("control_v11p_sd15_canny [") for title in models)
    modules = server.get("/controlnet/module_list").json()
    assert "canny" in modules["module_list"] and modules["module_list"][0] == "none"
    assert modules["module_detail"]["canny"]["sliders"]
    assert "depth" in modules["module_list"] and "depth_midas" not in modules["module_list"]   # internal names
    labels = server.get("/controlnet/module_list", params={"alias_names": True}).json()
    assert "depth_midas" in labels["module_list"] and "depth" not in labels["module_list"]
    assert labels["module_detail"]["depth_midas"]["sliders"]
    types = server.get("/controlnet/control_types").json()["control_types"]
    assert "canny" in types["Canny"]["module_list"]
    assert any(title.startswith("control_v11p_sd15_canny") for title in types["Canny"]["model_list"])
    assert server.get("/controlnet/settings").json() == {"control_net_unit_count": 3}


def test_txt2img_with_an_extension_style_unit(server):
    plain = server.post("/sdapi/v1/txt2img", json=SMALL).json()
    response = txt2img(server, [canny_unit(), {"enabled": False}])
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["images"]) == 2   # the image, then the annotation map (as the extension returns them)
    image, detected = decode(body["images"][0]), decode(body["images"][1])
    assert image.size == (64, 64)
    assert np.abs(np.asarray(image, np.int16) - np.asarray(decode(plain["images"][0]), np.int16)).max() > 0
    assert np.asarray(detected.convert("L")).max() == 255
    infotext = parse_infotext(image.info["parameters"])
    assert infotext["ControlNet 0"].startswith("Module: canny, Model: control_v11p_sd15_canny [")


def test_img2img_unit_without_image_uses_the_init_image(server):
    unit = canny_unit(resize_mode=0, control_mode=2)
    del unit["input_image"]
    response = server.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [b64(photo())],
                                                      "denoising_strength": 0.7,
                                                      "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert response.status_code == 200, response.text
    assert "Control Mode: ControlNet is more important" in response.json()["info"]


def test_detect_returns_maps(server):
    response = server.post("/controlnet/detect", json={"controlnet_module": "canny",
                                                       "controlnet_input_images": [b64(photo(96, 64))],
                                                       "controlnet_processor_res": 64})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["info"] == "Success"
    detected = decode(body["images"][0])
    assert min(detected.size) == 64 and detected.size[0] > detected.size[1]


@pytest.mark.parametrize("unit,field", [
    ({"module": "sparkles"}, "module"),
    ({"model": "nope [12345678]"}, "model"),
    ({"weight": "heavy"}, "weight"),
    ({"input_image": "not base64!"}, "input_image"),
    ({"resize_mode": 9}, "resize_mode"),
    ({"effective_region_mask": b64(photo())}, "effective_region_mask"),
    ({"made_up_field": 1}, "made_up_field"),
])
def test_bad_units_get_422_naming_the_field(server, unit, field):
    response = txt2img(server, [canny_unit(**unit)])
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(field in [str(part) for part in item["loc"]] for item in detail), detail
    assert any(item["loc"][:4] == ["body", "alwayson_scripts", "ControlNet", "args"]
               or item["loc"][:4] == ["body", "alwayson_scripts", "controlnet", "args"] for item in detail), detail
    assert server.get("/controlnet/version").status_code == 200   # still serving


def test_controlnet_for_another_family_is_a_422(server):
    response = txt2img(server, [canny_unit(model="diffusers_xl_canny_small")])
    assert response.status_code == 422, response.text
    assert "SDXL" in response.text and "ControlNet unit 0" in response.text


def test_detect_bad_input(server):
    unknown = server.post("/controlnet/detect", json={"controlnet_module": "sparkles",
                                                      "controlnet_input_images": [b64(photo())]})
    assert unknown.status_code == 422 and "controlnet_module" in unknown.text
    empty = server.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": []})
    assert empty.status_code == 422 and "controlnet_input_images" in empty.text
    missing = server.post("/controlnet/detect", json={"controlnet_module": "softedge_hed",
                                                      "controlnet_input_images": [b64(photo())]})
    assert missing.status_code == 422 and "ControlNetHED.pth" in missing.text
