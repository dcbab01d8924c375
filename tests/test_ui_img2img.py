"""The img2img tab's and the Hires. fix accordion's pure helpers: component values → request data, masks."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.generation.hires import HiresPlan
from modules.generation.request import validate_request
from modules.ui import accordions, img2img_batch, img2img_inputs, paste, request_form


def _txt2img_values(**changes) -> dict:
    values = {"prompt": "a cat", "negative_prompt": "", "sampler_name": "Euler a", "scheduler": "Automatic",
              "steps": 20, "width": 512, "height": 512, "n_iter": 1, "batch_size": 1, "cfg_scale": 7,
              "seed": -1, "extra": False, "subseed": -1, "subseed_strength": 0, "seed_resize_from_w": 0,
              "seed_resize_from_h": 0, "tiling": False, "clip_skip": 1, "styles": [],
              "enable_hr": False, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "denoising_strength": 0.7,
              "hr_scale": 2, "hr_resize_x": 0, "hr_resize_y": 0, "hr_sampler_name": "Use same sampler",
              "hr_scheduler": "Use same scheduler", "hr_prompt": None, "hr_negative_prompt": "",
              "enable_refiner": False, "refiner_checkpoint": "sd_xl_refiner.safetensors", "refiner_switch_at": 0.8}
    values.update(changes)
    return values


def _img2img_values(**changes) -> dict:
    values = {key: value for key, value in _txt2img_values().items() if not key.startswith("hr_")
              and key != "enable_hr"}
    values.update({"mode": "img2img", "resize_tab": "to", "scale_by": 1.0, "denoising_strength": 0.75,
                   "resize_mode": 0, "mask_blur": 4, "mask_alpha": 0, "inpainting_mask_invert": 0,
                   "inpainting_fill": 1, "inpaint_full_res": 0, "inpaint_full_res_padding": 32,
                   "init_img": None, "sketch": None, "init_img_with_mask": None,
                   "inpaint_color_sketch": None, "init_img_inpaint": None, "init_mask_inpaint": None,
                   "batch_input_dir": "", "batch_output_dir": "", "batch_inpaint_mask_dir": "",
                   "batch_use_png_info": False, "batch_png_info_dir": "", "batch_png_info_props": []})
    values.update(changes)
    return values


def _editor(size=(64, 48), box=None, color=(255, 255, 255, 255)) -> dict:
    """A gr.ImageEditor value as Gradio 6 hands it over (type="pil"): a red background, one paint layer."""
    background = Image.new("RGBA", size, (200, 0, 0, 255))
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    if box:
        ImageDraw.Draw(layer).rectangle(box, fill=color)
    composite = Image.alpha_composite(background, layer)
    return {"background": background, "layers": [layer], "composite": composite}


# ------------------------------------------------------------------ masks

def test_inpaint_mask_is_the_painted_area_of_the_layers():
    editor = _editor(box=(10, 5, 19, 14))
    init, mask = img2img_inputs.init_and_mask("inpaint", {"init_img_with_mask": editor})
    assert init.mode == "RGB" and init.size == (64, 48)
    assert init.getpixel((15, 10)) == (200, 0, 0)      # the background, not the white paint
    assert mask.mode == "L" and mask.size == (64, 48)
    pixels = np.asarray(mask)
    assert pixels[5:15, 10:20].min() == 255
    assert pixels.sum() == 255 * 10 * 10                 # nothing outside the stroke


def test_inpaint_without_a_stroke_or_image_says_what_to_do():
    with pytest.raises(img2img_inputs.InputError, match="paint over"):
        img2img_inputs.init_and_mask("inpaint", {"init_img_with_mask": _editor()})
    with pytest.raises(img2img_inputs.InputError, match="upload an image first"):
        img2img_inputs.init_and_mask("inpaint", {"init_img_with_mask": {"background": None, "layers": [],
                                                                 "composite": None}})


def test_inpaint_sketch_mask_is_where_the_sketch_changed_the_picture():
    editor = _editor(box=(0, 0, 7, 7), color=(0, 0, 255, 255))
    init, mask = img2img_inputs.init_and_mask("inpaint_sketch", {"inpaint_color_sketch": editor, "mask_alpha": 0})
    assert init.getpixel((2, 2)) == (0, 0, 255)          # the sketch is part of the init image
    assert np.asarray(mask)[:8, :8].min() == 255 and np.asarray(mask)[8:, 8:].max() == 0
    _, faded = img2img_inputs.init_and_mask("inpaint_sketch", {"inpaint_color_sketch": editor, "mask_alpha": 50})
    assert 120 <= faded.getpixel((2, 2)) <= 135          # "Mask transparency" 50 halves the mask


def test_sketch_uses_the_composite_and_no_mask():
    init, mask = img2img_inputs.init_and_mask("sketch", {"sketch": _editor(box=(0, 0, 3, 3), color=(0, 255, 0, 255))})
    assert mask is None and init.getpixel((1, 1)) == (0, 255, 0)


def test_uploaded_mask_is_required_and_passed_on():
    image = Image.new("RGB", (40, 40), "blue")
    alpha_mask = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    ImageDraw.Draw(alpha_mask).rectangle((0, 0, 9, 19), fill=(0, 0, 0, 255))
    _, mask = img2img_inputs.init_and_mask("inpaint_upload",
                                           {"init_img_inpaint": image, "init_mask_inpaint": alpha_mask})
    assert mask is alpha_mask   # passed on as uploaded: the backend reads alpha or grey and fits it to the image
    with pytest.raises(img2img_inputs.InputError, match="mask"):
        img2img_inputs.init_and_mask("inpaint_upload", {"init_img_inpaint": image, "init_mask_inpaint": None})


# ------------------------------------------------------------------ request data

def test_img2img_request_data_validates_with_the_image_and_settings():
    photo = Image.new("RGBA", (96, 64), (10, 20, 30, 255))
    data = img2img_inputs.request_data(_img2img_values(init_img=photo, inpaint_full_res=1, n_iter=2.0))
    request = validate_request(data)
    assert len(request.init_images) == 1 and request.init_images[0].mode == "RGB"
    assert request.mask is None
    assert request.denoising_strength == 0.75 and request.n_iter == 2
    assert request.inpaint_full_res is True and request.inpainting_fill == 1
    assert request.selected_script is None and request.extension_scripts == {}
    assert request.refiner_checkpoint is None             # the accordion is not ticked


def test_no_image_is_a_clear_error():
    with pytest.raises(img2img_inputs.InputError, match="img2img: upload an image first"):
        img2img_inputs.request_data(_img2img_values())


def test_resize_by_scales_the_input_size_to_multiples_of_8():
    assert img2img_inputs.scaled_size((100, 60), 1.5) == (152, 88)
    assert img2img_inputs.scaled_size((512, 768), 0.5) == (256, 384)
    assert img2img_inputs.scaled_size((100, 60), 0.05) == (64, 64)
    data = img2img_inputs.request_data(_img2img_values(init_img=Image.new("RGB", (100, 60)), resize_tab="by",
                                                scale_by=1.5))
    assert (data["width"], data["height"]) == (152, 88)


def test_inpaint_request_carries_the_mask():
    data = img2img_inputs.request_data(_img2img_values(mode="inpaint", init_img_with_mask=_editor(box=(0, 0, 9, 9)),
                                                inpainting_mask_invert=1, mask_blur=8.0))
    request = validate_request(data)
    assert request.mask.size == request.init_images[0].size == (64, 48)
    assert request.inpainting_mask_invert == 1 and request.mask_blur == 8


def test_png_info_fields_override_the_tab_for_batch_files():
    text = "a dog\nNegative prompt: ugly\nSteps: 33, Sampler: Euler a, CFG scale: 5, Seed: 77, Size: 64x64"
    base = {"prompt": "photo", "negative_prompt": "", "seed": -1, "steps": 20, "cfg_scale": 7.0}
    data = img2img_batch.png_info_overrides(base, text, ["Prompt", "Seed", "Steps"])
    assert data["prompt"] == "photo a dog" and data["seed"] == 77 and data["steps"] == 33
    assert data["cfg_scale"] == 7.0 and data["negative_prompt"] == ""   # not chosen: kept
    assert img2img_batch.png_info_overrides(base, None, ["Prompt"]) == base


# ------------------------------------------------------------------ txt2img: Hires. fix and Refiner

def test_txt2img_hires_and_refiner_request_data():
    request = validate_request(request_form.request_data(_txt2img_values(enable_hr=True, hr_scale=2)))
    assert request.enable_hr and request.hr_scale == 2.0 and request.hr_upscaler == "Latent"
    assert request.hr_sampler_name is None and request.hr_scheduler is None and request.hr_prompt == ""
    assert request.denoising_strength == 0.7
    assert request.refiner_checkpoint is None
    on = request_form.request_data(_txt2img_values(enable_refiner=True, hr_sampler_name="Euler"))
    assert on["refiner_checkpoint"] == "sd_xl_refiner.safetensors" and on["hr_sampler_name"] == "Euler"


def test_hires_size_shown_is_the_size_the_backend_renders():
    shown = accordions.hires_size_html
    assert "from <span class='resolution'>64x64</span> to <span class='resolution'>128x128</span>" == \
        shown(64, 64, 2, 0, 0)
    # 512 × 1.3 = 665.6: the latents make it 664, and the UI says so (not 665)
    assert shown(512, 512, 1.3, 0, 0).endswith("<span class='resolution'>664x664</span>")
    # both resize-to values set: the final size, after the cover is cropped to the box
    assert shown(512, 256, 2.0, 1024, 1024).endswith("<span class='resolution'>1024x1024</span>")
    for case in ((512, 512, 2.0, 0, 0), (512, 768, 1.5, 0, 0), (512, 256, 2.0, 1024, 0), (512, 256, 2.0, 0, 1024),
                 (512, 512, 1.3, 0, 0), (600, 400, 1.0, 0, 1000), (512, 256, 2.0, 1000, 700)):
        width, height = HiresPlan.of_size(*case).target
        assert shown(*case).endswith(f"<span class='resolution'>{width}x{height}</span>")
    assert shown(512, 0, 2.0, 0, 1024) == ""   # a size that cannot be: nothing shown


class _Registry:
    def find(self, query):
        class Info:
            title, name = "refiner.safetensors [abc123]", "refiner.safetensors"
        return Info() if query and query.startswith("refiner") else None


def test_paste_fills_the_hires_and_refiner_accordions():
    class Services:
        registry = _Registry()
    parsed = {"denoising_strength": 0.4, "hr_scale": 1.5, "enable_hr": True, "hr_sampler_name": "Euler Karras",
              "refiner_checkpoint": "refiner.safetensors [abc123]", "refiner_switch_at": 0.6,
              "seed_resize_from_w": -1}
    values = paste.pasted_values(Services(), parsed)
    assert values["hr_sampler_name"] == "Euler" and values["hr_scheduler"] == "Karras"
    assert values["refiner_checkpoint"] == "refiner.safetensors [abc123]" and values["enable_refiner"] is True
    assert values["enable_hr"] is True and values["seed_resize_from_w"] == 0
    unknown = paste.pasted_values(Services(), {"refiner_checkpoint": "other [ffff]"})
    assert "refiner_checkpoint" not in unknown and "enable_refiner" not in unknown


# ------------------------------------------------------------------ batch from a directory

class _BatchServices:
    def __init__(self, hide=False):
        self.args = type("Args", (), {"hide_ui_dir_config": hide})()
        self.registry = self.networks = self.upscalers = self.controlnet = self.scripts = None
        self.requests = []

    def submit_img2img(self, request):
        self.requests.append(request)
        return request


def test_batch_makes_one_job_per_image_and_saves_to_the_output_folder(tmp_path):
    inputs, masks, outputs = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    inputs.mkdir(), masks.mkdir()
    Image.new("RGB", (64, 64), "red").save(inputs / "a.png")
    Image.new("RGB", (80, 64), "blue").save(inputs / "b.jpg")
    (inputs / "notes.txt").write_text("not an image")
    Image.new("L", (64, 64), 255).save(masks / "a.png")
    services = _BatchServices()
    values = _img2img_values(mode="batch", batch_input_dir=str(inputs), batch_output_dir=str(outputs),
                             batch_inpaint_mask_dir=str(masks))
    submissions = img2img_batch.submissions(services, img2img_inputs.request_data(values), values, "#ffffff")
    assert len(submissions) == 2
    first, second = (submission.submit() for submission in submissions)
    assert first.init_images[0].size == (64, 64) and first.mask.convert("L").getpixel((0, 0)) == 255
    assert second.init_images[0].size == (80, 64) and second.mask is None   # no mask file for b
    assert first.save_images is False                    # saved into the output folder instead
    result = type("Result", (), {"images": [Image.new("RGB", (64, 64))], "infotexts": ["a red wall"],
                                 "seeds": [5], "index_of_first_image": 0})()
    submissions[0].finished(result)
    saved = list(outputs.glob("*.png"))
    assert len(saved) == 1 and saved[0].name.endswith("-5.png")


def test_batch_refuses_with_hide_ui_dir_config_and_without_images(tmp_path):
    import gradio as gr
    values = _img2img_values(mode="batch", batch_input_dir=str(tmp_path))
    with pytest.raises(gr.Error, match="hide-ui-dir-config"):
        img2img_batch.submissions(_BatchServices(hide=True), img2img_inputs.request_data(values), values, "#ffffff")
    with pytest.raises(gr.Error, match="no images"):
        img2img_batch.submissions(_BatchServices(), img2img_inputs.request_data(values), values, "#ffffff")
