""""Send to" and PNG Info without a browser: infotext → the fields a tab shows, and metadata shown as text."""
from __future__ import annotations

import io
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from modules import images
from modules.output import infotext
from modules.diffusion import samplers
from modules.ui import paste, pnginfo, send_to

HIRES_INFOTEXT = (
    "a castle on a hill, (masterpiece:1.2)\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 23, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 987654, Size: 640x448, "
    "Model hash: 0123456789, Model: tiny-sd1, Variation seed: 42, Variation seed strength: 0.3, "
    "Seed resize from: 512x384, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 1.5, Hires steps: 7, "
    "Hires upscaler: Latent (bicubic), Hires prompt: a castle at night, Refiner: other [abcdef0123], "
    "Refiner switch at: 0.7, Version: v1.10.1"
)
INPAINT_INFOTEXT = (
    "a cat\n"
    "Steps: 12, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 512x512, "
    "Denoising strength: 0.6, Mask blur: 6, Mask mode: Inpaint not masked, Masked content: latent noise, "
    "Inpaint area: Only masked, Masked area padding: 48"
)


class FakeRegistry:
    """The checkpoint folder as registry.find sees it: each file found by title, name, stem or short hash."""
    def __init__(self, *titles):
        self.infos = []
        for title in titles:
            name, shorthash = title[:-13], title[-11:-1]
            self.infos.append(SimpleNamespace(title=title, ids={title, name, name.rsplit(".", 1)[0], shorthash}))

    def find(self, query):
        return next((info for info in self.infos if query in info.ids), None)


SERVICES = SimpleNamespace(registry=FakeRegistry("tiny-sd1.safetensors [0123456789]",
                                                 "other.safetensors [abcdef0123]"))


def values_for(text: str, target: str, **kwargs):
    warnings: list[str] = []
    values = send_to.field_values(SERVICES, infotext.parse_infotext(text), target, warnings, **kwargs)
    return values, warnings


def test_txt2img_gets_every_field_including_sampler_schedule_split_size_seed_and_hires():
    values, warnings = values_for(HIRES_INFOTEXT, "txt2img")
    assert not warnings
    assert values["prompt"] == "a castle on a hill, (masterpiece:1.2)"
    assert values["negative_prompt"] == "blurry, lowres"
    assert (values["sampler_name"], values["scheduler"]) == ("DPM++ 2M", "Karras")   # legacy combined name split
    assert values["sampler_name"] in samplers.sampler_names()
    assert values["scheduler"] in samplers.schedule_labels()
    assert (values["steps"], values["cfg_scale"], values["seed"]) == (23, 6.5, 987654)
    assert (values["width"], values["height"]) == (640, 448)
    assert values["clip_skip"] == 2
    assert (values["extra"], values["subseed"], values["subseed_strength"]) == (True, 42, 0.3)
    assert (values["seed_resize_from_w"], values["seed_resize_from_h"]) == (512, 384)
    assert values["enable_hr"] is True
    assert (values["hr_scale"], values["hr_second_pass_steps"], values["hr_upscaler"]) == (1.5, 7, "Latent (bicubic)")
    assert values["hr_prompt"] == "a castle at night"
    assert values["denoising_strength"] == 0.45
    # the refiner as the dropdown lists it: the checkpoint's title
    assert (values["enable_refiner"], values["refiner_checkpoint"], values["refiner_switch_at"]) == (
        True, "other.safetensors [abcdef0123]", 0.7)


def test_an_image_without_hires_or_variation_unticks_them():
    values, _ = values_for("a dog\nSteps: 20, Sampler: Euler, Seed: 3, Size: 512x768", "txt2img")
    assert values["enable_hr"] is False
    assert values["extra"] is False
    assert values["enable_refiner"] is False
    assert (values["width"], values["height"]) == (512, 768)


def test_img2img_takes_the_image_size_the_mask_settings_and_no_hires_fields():
    values, warnings = values_for(HIRES_INFOTEXT, "img2img", image_size=(1000, 333))
    assert not warnings
    assert (values["width"], values["height"]) == (1000, 336)   # the image's size, on the sliders' 8-pixel grid
    assert not {"enable_hr", "hr_scale", "hr_upscaler", "hr_prompt"} & set(values)
    assert values["denoising_strength"] == 0.45

    values, warnings = values_for(INPAINT_INFOTEXT, "inpaint", image_size=(512, 512))
    assert not warnings
    assert values["mask_blur"] == 6
    assert values["inpainting_mask_invert"] == 1
    assert values["inpainting_fill"] == 2                # latent noise
    assert values["inpaint_full_res"] is True            # Only masked
    assert values["inpaint_full_res_padding"] == 48
    assert (values["sampler_name"], values["scheduler"]) == ("Euler a", "Automatic")


def test_a_gallery_send_takes_only_the_between_tab_fields():
    values, _ = values_for(HIRES_INFOTEXT, "img2img", image_size=(64, 64), only=send_to.GALLERY_FIELDS)
    assert values["prompt"].startswith("a castle") and values["seed"] == 987654 and values["steps"] == 23
    assert (values["width"], values["height"]) == (64, 64)
    assert "denoising_strength" not in values and "clip_skip" not in values


def test_extras_gets_no_fields_and_an_image_without_parameters_gives_only_its_size():
    assert values_for(HIRES_INFOTEXT, "extras")[0] == {}
    warnings: list[str] = []
    assert send_to.field_values(SERVICES, {}, "img2img", warnings, image_size=(256, 128)) == {
        "width": 256, "height": 128}
    assert send_to.field_values(SERVICES, {}, "txt2img", warnings) == {}


def test_unreadable_values_are_named_not_sent():
    values, warnings = values_for("x\nSteps: many, Sampler: Nonsense Sampler, Seed: 1, Size: 512x512", "txt2img")
    assert "steps" not in values and values["seed"] == 1
    assert any("Steps" in warning for warning in warnings)
    assert any("Nonsense Sampler" in warning for warning in warnings)


def test_the_checkpoint_that_made_the_image_is_selected_when_known():
    registry = SERVICES.registry
    parsed = infotext.parse_infotext(HIRES_INFOTEXT)
    warnings: list[str] = []
    assert send_to.checkpoint_title(parsed, registry, "other.safetensors [abcdef0123]", warnings) == \
        "tiny-sd1.safetensors [0123456789]"
    assert send_to.checkpoint_title(parsed, registry, "tiny-sd1.safetensors [0123456789]", warnings) is None
    assert not warnings

    unknown = infotext.parse_infotext("x\nSteps: 1, Seed: 1, Model hash: ffffffffff, Model: gone")
    assert send_to.checkpoint_title(unknown, registry, None, warnings) is None
    assert warnings and "ffffffffff" in warnings[0] and "keeping the current checkpoint" in warnings[0]


def test_values_are_shaped_for_the_receiving_components():
    with gr.Blocks():
        by_index = gr.Radio(["fill", "original", "latent noise", "latent nothing"], type="index")
        by_label = gr.Radio(list(send_to.paste.INPAINT_AREAS))
        sampler = gr.Dropdown(samplers.sampler_names())
        steps = gr.Slider(1, 150, step=1)
    warnings: list[str] = []
    assert paste.component_value("inpainting_fill", by_index, 2, warnings) == "latent noise"
    assert paste.component_value("inpaint_full_res", by_label, True, warnings) == "Only masked"
    assert paste.component_value("sampler_name", sampler, "Euler a", warnings) == "Euler a"
    assert not warnings
    assert paste.component_value("sampler_name", sampler, "Mystery", warnings) is None
    assert paste.component_value("steps", steps, 400, warnings) == 150
    assert len(warnings) == 2 and "Mystery" in warnings[0] and "400" in warnings[1]


# ---------------------------------------------------------------- PNG Info

HOSTILE = 'a <script>alert("x")</script> cat <img src=x onerror=alert(1)>\nSteps: 2, Seed: 1, Size: 64x64'


def png_with(parameters: str | None, **chunks) -> Image.Image:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG", pnginfo=info)
    buffer.seek(0)
    return Image.open(buffer)


def test_pnginfo_shows_parameters_and_other_chunks_escaped():
    html, text = pnginfo.read(png_with(HOSTILE, Software="<b>tool</b>"))
    assert text == HOSTILE
    assert "<script" not in html and "<img" not in html and "<b>tool" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "Software" in html and "&lt;b&gt;tool&lt;/b&gt;" in html
    assert "No generation parameters" not in html


def test_pnginfo_says_when_an_image_has_no_parameters(tmp_path):
    html, text = pnginfo.read(png_with(None, Comment="just a photo"))
    assert text == ""
    assert "No generation parameters found in this image." in html
    assert "just a photo" in html
    assert pnginfo.read(None) == ("", "")


def test_pnginfo_reads_the_exif_comment_of_a_jpeg_and_webp(tmp_path):
    for extension in ("jpg", "webp"):
        path = images.save_image(Image.new("RGB", (16, 16), "blue"), tmp_path, seed=1, infotext=HOSTILE,
                                 extension=extension)
        html, text = pnginfo.read(Image.open(path))
        assert text == HOSTILE, extension
        assert "&lt;script&gt;" in html and "<script" not in html


@pytest.mark.parametrize("target", ["txt2img", "img2img", "inpaint", "extras"])
def test_pnginfo_has_the_a1111_send_buttons(target):
    with gr.Blocks():
        tab = pnginfo.create_tab()
    button = tab.send_buttons[target]
    assert button.value == f"Send to {target}" and button.elem_id == f"{target}_tab"
