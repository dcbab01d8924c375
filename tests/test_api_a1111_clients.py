"""What A1111's own API suite and its clients send and read (issue 20 §2): true/false for A1111's int flags, every
A1111 option in /sdapi/v1/options with A1111's default, and restore_faces during a generation."""
from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from modules import cmd_args, services as services_module, shared
from modules.addons.xyz_axes import apply_face_restore, axis_options, find_option
from modules.options import Options
from modules.settings.a1111_options import A1111_RESTRICTED, A1111_SECTIONS
from modules.settings.table import A1111_ACTED_ON, HONOURED, NO_EFFECT
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.pictures import b64, photo
from tests.fixtures.tiny_checkpoints import build_tiny_model

SMALL = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 7, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--api", "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        client.services = services
        client.data = data
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd1"}).status_code == 200
        yield client
    services.shutdown()


def pixels(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=np.int16)


def right_half_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((32, 0, 63, 63), fill=255)
    return mask


def infotext(response) -> str:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])["infotexts"][0]


def names_field(response, *field: str) -> str:
    """The 422's message for `field` (its loc ends with it)."""
    assert response.status_code == 422, response.text
    for item in response.json()["detail"]:
        if item["loc"][0] == "body" and item["loc"][-len(field):] == list(field):
            return item["msg"]
    raise AssertionError(f"no error names {field}: {response.text}")


# ---------------------------------------------------------------- 1. what A1111's pydantic-v1 models took

def test_true_false_for_a1111_int_flags_are_taken_as_a1111_did(server):
    """A1111's test_img2img.py sends "inpainting_mask_invert": false; its models made 0 of it (and 1 of true)."""
    body = {**SMALL, "init_images": [b64(photo())], "mask": b64(right_half_mask()), "inpainting_mask_invert": True,
            "inpainting_fill": False, "resize_mode": False, "mask_blur": False, "inpaint_full_res": False,
            "restore_faces": False, "tiling": 0, "denoising_strength": 0.75}
    text = infotext(server.post("/sdapi/v1/img2img", json=body))
    assert "Mask mode: Inpaint not masked" in text and "Masked content: fill" in text and "Mask blur" not in text
    body.update(inpainting_mask_invert=False, inpainting_fill=True, mask_blur=4.0)
    text = infotext(server.post("/sdapi/v1/img2img", json=body))
    assert "Mask mode" not in text and "Masked content: original" in text and "Mask blur: 4" in text


@pytest.mark.parametrize("field, literal", [
    ("mask_blur", "NaN"), ("mask_blur", "Infinity"), ("mask_blur", '"4"'), ("mask_blur", "4.5"),
    ("inpainting_mask_invert", "2"), ("inpainting_fill", "7"), ("resize_mode", "1.5"), ("resize_mode", "-1"),
    ("steps", "true"),   # a count is not a switch: true is not 1 step
    ("restore_faces", "2"),
])
def test_other_values_are_still_a_422_naming_the_field(server, field, literal):
    raw = json.dumps({**SMALL, "init_images": [b64(photo())], "mask": b64(right_half_mask())})
    response = server.post("/sdapi/v1/img2img", content=raw[:-1] + f', "{field}": {literal}}}',
                           headers={"Content-Type": "application/json"})
    names_field(response, field)


def test_an_unknown_option_name_is_a_422_naming_it(server):
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"no_such_option": 1}})
    names_field(response, "override_settings", "no_such_option")
    names_field(server.post("/sdapi/v1/options", json={"no_such_option": 1}), "no_such_option")


# ---------------------------------------------------------------- 2. every A1111 option, with A1111's default

# Written from A1111 v1.10.1's shared_options.py, independently of the table: a check of the table itself.
A1111_DEFAULTS = {
    "send_seed": True, "send_size": True, "samples_save": True, "samples_format": "png", "jpeg_quality": 80,
    "samples_filename_pattern": "", "save_images_add_number": True, "grid_only_if_multiple": True, "n_rows": -1,
    "outdir_samples": "", "outdir_init_images": "outputs/init-images", "directories_filename_pattern": "[date]",
    "ESRGAN_tile": 192, "face_restoration": False, "face_restoration_model": "CodeFormer", "code_former_weight": 0.5,
    "CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic", "emphasis": "Original", "tiling": False,
    "enable_prompt_comments": True, "sdxl_refiner_high_aesthetic_score": 6.0, "img2img_background_color": "#ffffff",
    "initial_noise_multiplier": 1.0, "token_merging_ratio": 0.0, "eta_ddim": 0.0, "eta_ancestral": 1.0,
    "s_noise": 1.0, "eta_noise_seed_delta": 0, "uni_pc_order": 3, "keyedit_delimiters": ".,\\/!?%^*;:{}=`~() ",
    "live_previews_image_format": "png", "show_progress_every_n_steps": 10, "return_grid": True,
    "interrupt_after_current": True, "add_version_to_infotext": True, "infotext_styles": "Apply if any",
    "lora_preferred_name": "Alias from file", "canvas_hotkey_zoom": "Alt", "hypertile_max_tile_vae": 128,
    "SWIN_tile": 192, "disable_all_extensions": "none", "sd_checkpoint_hash": "",
}
# Where this web UI's default is its own (it is documented with the option): not A1111's.
OUR_DEFAULTS = {"sd_model_checkpoint", "sd_checkpoint_hash", "sd_checkpoints_limit",
                "quicksettings_list", "show_progress_type", "upscaler_for_img2img"}


def a1111_table() -> dict:
    return {entry[0]: entry[1] for _, _, entries in A1111_SECTIONS for entry in entries}


def test_every_a1111_option_is_in_get_options_with_a1111s_default_and_type(server):
    table = a1111_table()
    assert len(table) == 324 and {key: table[key] for key in A1111_DEFAULTS} == A1111_DEFAULTS
    values = server.get("/sdapi/v1/options").json()
    missing = sorted(set(table) - set(values))
    assert not missing
    differ = {key: (values[key], default) for key, default in table.items()
              if key not in OUR_DEFAULTS and (values[key] != default or type(values[key]) is not type(default))}
    assert not differ
    assert values["sd_model_checkpoint"].startswith("tiny-sd1") and len(values["sd_checkpoint_hash"]) == 64
    data = server.services.paths.data
    for key in table:   # what an extension reads: shared.opts.<key>; a folder under the data folder, absolute
        stored = server.services.options.get(key)
        folder = (key.startswith("outdir_") or key in ("temp_dir", "control_net_detectedmap_dir")) and stored
        assert getattr(shared.opts, key) == (str(data / stored) if folder else stored), key


def test_post_options_toggles_send_seed_and_it_persists(server):
    """A1111's test_utils.test_options_write."""
    before = server.get("/sdapi/v1/options").json()["send_seed"]
    assert server.post("/sdapi/v1/options", json={"send_seed": not before}).status_code == 200
    assert server.get("/sdapi/v1/options").json()["send_seed"] is (not before)
    assert Options(server.data / "config.json").send_seed is (not before)        # after a restart
    assert server.post("/sdapi/v1/options", json={"send_seed": before}).status_code == 200
    assert server.get("/sdapi/v1/options").json()["send_seed"] is before


@pytest.mark.parametrize("changes, field", [
    ({"eta_ddim": 1.5}, "eta_ddim"), ({"jpeg_quality": float("nan")}, "jpeg_quality"),
    ({"live_previews_image_format": "gif"}, "live_previews_image_format"), ({"send_seed": "yes"}, "send_seed"),
    ({"samples_filename_pattern": "[seed]"}, "samples_filename_pattern"),   # restricted, as in A1111
    ({"temp_dir": "/tmp"}, "temp_dir"),
])
def test_a1111_options_are_checked_and_restricted_ones_stay_restricted(server, changes, field):
    before = server.services.options.get(field)
    raw = json.dumps(changes, allow_nan=True)
    names_field(server.post("/sdapi/v1/options", content=raw, headers={"Content-Type": "application/json"}), field)
    assert server.services.options.get(field) == before


def test_restricted_a1111_options_are_restricted_here():
    from modules.settings.table import OPTIONS

    assert A1111_RESTRICTED <= {key for key, info in OPTIONS.items() if info.restrict_api}


def test_settings_tab_shows_a1111_options_and_says_which_have_no_effect(server):
    import gradio as gr
    from modules.ui import settings

    with gr.Blocks() as demo:
        tab = settings.create_tab(server.services, demo)
    assert NO_EFFECT in (tab.components["send_seed"].info or "")
    assert tab.components["keyedit_precision_attention"].maximum == 0.2
    assert NO_EFFECT in tab.components["keyedit_precision_attention"].info
    for honoured in ("samples_format", "face_restoration", "code_former_weight", "eta_ddim"):
        assert honoured in {*HONOURED, *A1111_ACTED_ON} and NO_EFFECT not in (tab.components[honoured].info or "")
    assert {"sd", "vae", "sampler-params", "ui_gallery", "hypertile", "canvas_hotkey"} <= set(tab.sections)
    # An event with every option as an output makes the browser take tens of seconds to open the tab.
    widest = max(len(dependency["outputs"]) for dependency in demo.get_config_file()["dependencies"])
    assert len(tab.components) > 300 and widest < 120


# ---------------------------------------------------------------- 3. restore_faces during a generation

@pytest.fixture
def submitted(server, monkeypatch):
    jobs = []
    queue = server.services.queue
    real = queue.submit
    monkeypatch.setattr(queue, "submit", lambda *a, **k: jobs.append(a[0]) or real(*a, **k))
    return jobs


def test_restore_faces_without_a_model_is_a_422_naming_the_files_to_add(server, submitted):
    message = names_field(server.post("/sdapi/v1/txt2img", json={**SMALL, "restore_faces": True}), "restore_faces")
    assert "models/Codeformer/codeformer-v0.1.0.pth" in message
    assert "models/GFPGAN/detection_Resnet50_Final.pth" in message
    message = names_field(server.post("/sdapi/v1/img2img", json={
        **SMALL, "init_images": [b64(photo())], "restore_faces": True,
        "override_settings": {"face_restoration_model": "GFPGAN"}}), "restore_faces")
    assert "models/GFPGAN/GFPGANv1.4.pth" in message
    assert submitted == []


@pytest.fixture
def fake_restorer(server, monkeypatch):
    """A restorer that inverts the picture and records what it was asked for."""
    calls = []
    restorers = server.services.restorers

    def restore(image, name, visibility, codeformer_weight=0.5, job=None):
        calls.append((name, visibility, codeformer_weight, image.size))
        return ImageOps.invert(image.convert("RGB"))

    monkeypatch.setattr(restorers, "missing_message", lambda name: "")
    monkeypatch.setattr(restorers, "restore", restore)
    return calls


def test_restore_faces_restores_each_image_and_says_so_in_the_infotext(server, fake_restorer):
    plain = server.post("/sdapi/v1/txt2img", json={**SMALL, "restore_faces": False})
    assert "Face restoration" not in infotext(plain) and fake_restorer == []
    restored = server.post("/sdapi/v1/txt2img", json={**SMALL, "restore_faces": True,
                                                      "override_settings": {"code_former_weight": 0.25}})
    text = infotext(restored)
    assert "Seed: 7, Face restoration: CodeFormer, Size: 64x64" in text
    info = json.loads(restored.json()["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "CodeFormer"
    assert fake_restorer == [("CodeFormer", 1.0, 0.25, (64, 64))]
    assert (pixels(restored.json()["images"][0]) + pixels(plain.json()["images"][0]) == 255).all()


def test_the_face_restoration_setting_decides_when_the_request_does_not(server, fake_restorer):
    server.services.options.update({"face_restoration": True, "face_restoration_model": "GFPGAN"})
    try:
        assert "Face restoration: GFPGAN" in infotext(server.post("/sdapi/v1/txt2img", json=SMALL))
        assert "Face restoration" not in infotext(server.post("/sdapi/v1/txt2img",
                                                              json={**SMALL, "restore_faces": False}))
    finally:
        server.services.options.update({"face_restoration": False, "face_restoration_model": "CodeFormer"})
    assert [call[0] for call in fake_restorer] == ["GFPGAN"]


def test_xyz_face_restore_axis_is_a1111s():
    option = find_option("X", axis_options(False), "Face restore")
    assert option.unavailable == "" and option.apply is apply_face_restore
    for value, restore, model in [("CodeFormer", True, "CodeFormer"), ("gfpgan", True, "GFPGAN"),
                                  ("true", True, None), ("No", False, None)]:
        p = SimpleNamespace(override_settings={}, restore_faces=None)
        apply_face_restore(p, value, [])
        assert p.restore_faces is restore and p.override_settings.get("face_restoration_model") == model
