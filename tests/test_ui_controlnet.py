"""The ControlNet accordion without a browser: the units' controls → the request, paste filling them, the sliders
following the preprocessor, the Model list following the checkpoint, and the 💥 preview."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules import cmd_args, services as services_module
from modules.output import infotext
from modules.ui import controlnet, img2img, img2img_inputs, request_form, send_to, txt2img
from modules.ui.paste_button import paste_handler
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_controlnets import build_tiny_controlnet, write_controlnet

SD15 = "control_tiny_sd15_canny"
SDXL = "control_tiny_sdxl_canny"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"),
                                     {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    folder = data / "models" / "ControlNet"
    folder.mkdir(parents=True)
    write_controlnet(build_tiny_controlnet("sd1"), folder / f"{SD15}.safetensors")
    write_controlnet(build_tiny_controlnet("sdxl"), folder / f"{SDXL}.safetensors")
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data)]))
    yield built
    built.shutdown()


@pytest.fixture(scope="module")
def tabs(services):
    with gr.Blocks():
        made = {"txt2img": txt2img.create_tab(services), "img2img": img2img.create_tab(services)}
    return made


def title_of(services, name: str) -> str:
    return services.controlnet.registry.find(name).title


def photo(size=(64, 64)) -> Image.Image:
    image = Image.new("RGB", size, (90, 90, 90))
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill=(240, 240, 240))
    return image


def defaults(tab) -> dict:
    """The tab's values as a fresh page sends them."""
    return {name: None if component.value is None else component.preprocess(component.value)
            for name, component in tab.fields.items()}


def unit_values(index: int, **values) -> dict:
    return {controlnet.unit_key(index, name): value for name, value in values.items()}


# ------------------------------------------------------------------ the controls → the request

def test_the_units_settings_become_the_requests_controlnet_units(services, tabs):
    tab = tabs["txt2img"]
    assert len([key for key in tab.fields if key.endswith(".enabled")]) == 3   # control_net_unit_count
    image = photo()
    values = {**defaults(tab), "prompt": "a house",
              **unit_values(0, enabled=True, module="canny", model=title_of(services, SD15), image=image, weight=0.6,
                            threshold_a=80.0, threshold_b=160.0, processor_res=256, guidance_start=0.1,
                            guidance_end=0.8, pixel_perfect=True, control_mode="ControlNet is more important",
                            resize_mode="Just Resize", hr_option="Low res only", low_vram=True),
              **unit_values(1, image=photo())}   # a picture in a unit that is not enabled
    request = request_form.validated(services, request_form.request_data(values))
    first, second, third = request.controlnet_units
    assert first.enabled and first.module == "canny" and first.model == title_of(services, SD15)
    assert first.image.size == image.size
    assert (first.weight, first.threshold_a, first.threshold_b, first.processor_res) == (0.6, 80.0, 160.0, 256)
    assert (first.guidance_start, first.guidance_end, first.pixel_perfect, first.low_vram) == (0.1, 0.8, True, True)
    assert (first.control_mode, first.resize_mode, first.hr_option) == (2, 0, "Low res only")
    assert not second.enabled and second.image is None and not third.enabled
    untouched = request_form.validated(services, request_form.request_data(defaults(tab)))
    assert not any(unit.enabled for unit in untouched.controlnet_units)


def test_an_enabled_unit_without_a_model_is_named_in_the_error(services, tabs):
    values = {**defaults(tabs["txt2img"]), **unit_values(1, enabled=True, module="canny", image=photo())}
    with pytest.raises(gr.Error) as raised:
        request_form.validated(services, request_form.request_data(values))
    assert "ControlNet Unit 1 › Model: an enabled unit needs a ControlNet model" in raised.value.message


def test_img2img_units_use_the_img2img_image_unless_given_their_own(services, tabs):
    tab = tabs["img2img"]
    assert not any(key.endswith(".hr_option") for key in tab.fields)   # no hires fix in img2img
    own = photo((80, 64))
    base = {**defaults(tab), "init_img": photo(),
            **unit_values(0, enabled=True, module="canny", model=title_of(services, SD15), image=own)}
    same = request_form.validated(services, img2img_inputs.request_data(base), img2img_inputs.LABELS)
    assert same.controlnet_units[0].image is None   # the backend uses the img2img image
    independent = {**base, **unit_values(0, independent=True)}
    request = request_form.validated(services, img2img_inputs.request_data(independent), img2img_inputs.LABELS)
    assert request.controlnet_units[0].image.size == (80, 64)


# ------------------------------------------------------------------ paste and "Send to"

PASTED = ('a house\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, '
          'ControlNet 0: "Module: canny, Model: {model}, Weight: 0.6, Resize Mode: Just Resize, Processor Res: 256, '
          'Threshold A: 90.0, Threshold B: 180.0, Guidance Start: 0.1, Guidance End: 0.9, Pixel Perfect: False, '
          'Control Mode: My prompt is more important"')


def test_paste_fills_the_units_controls(services, tabs):
    fields = tabs["txt2img"].fields
    updates = paste_handler(services, fields)(PASTED.format(model=f"{SD15} [0123456789]"))
    field = lambda index, name: updates.get(fields[controlnet.unit_key(index, name)])   # noqa: E731
    assert field(0, "enabled") is True
    assert field(0, "module")["value"] == "canny" and field(0, "control_type") == "All"
    assert field(0, "model")["value"] == title_of(services, SD15)   # a stale hash still finds the file
    assert (field(0, "weight"), field(0, "guidance_start"), field(0, "guidance_end")) == (0.6, 0.1, 0.9)
    assert field(0, "control_mode") == "My prompt is more important" and field(0, "resize_mode") == "Just Resize"
    low = field(0, "threshold_a")
    assert (low["label"], low["value"], low["minimum"], low["maximum"], low["visible"]) == (
        "Low Threshold", 90.0, 1, 255, True)
    assert field(0, "threshold_b")["value"] == 180.0 and field(0, "processor_res")["value"] == 256
    assert field(1, "enabled") is None   # ↙️ paste leaves the other units as they are
    assert fields[controlnet.unit_key(0, "image")] not in updates


def test_sending_an_image_ticks_only_its_units_and_names_what_is_missing(services, tabs):
    fields = tabs["txt2img"].fields
    warnings: list[str] = []
    values = send_to.field_values(services, infotext.parse_infotext(PASTED.format(model="control_v11p_sd15_seg")),
                                  "txt2img", warnings)
    updates = controlnet.paste_updates(services, values["controlnet_units"], fields, warnings, untick_others=True)
    assert updates[fields[controlnet.unit_key(0, "enabled")]] is True
    assert updates[fields[controlnet.unit_key(0, "model")]]["value"] == "None"
    assert any("ControlNet Unit 0 › Model: 'control_v11p_sd15_seg' is not available here" in w for w in warnings)
    assert updates[fields[controlnet.unit_key(1, "enabled")]] is False
    assert updates[fields[controlnet.unit_key(2, "enabled")]] is False
    plain = send_to.field_values(services, infotext.parse_infotext("a cat\nSteps: 4, Seed: 1"), "txt2img", [])
    assert plain["controlnet_units"] == []   # an image made without ControlNet unticks every unit


# ------------------------------------------------------------------ sliders, control types, models

def test_the_sliders_follow_the_preprocessor(services):
    find = services.controlnet.preprocessors.find
    resolution, low, high = controlnet.slider_updates(find("canny"), pixel_perfect=False)
    assert (resolution["label"], resolution["value"], resolution["visible"]) == ("Preprocessor Resolution", 512, True)
    assert (low["label"], low["value"], high["label"], high["value"]) == ("Low Threshold", 100, "High Threshold", 200)
    resolution, value, distance = controlnet.slider_updates(find("mlsd"), pixel_perfect=True)
    assert resolution["visible"] is False   # Pixel Perfect decides the resolution
    assert (value["label"], value["minimum"], value["maximum"], value["step"]) == (
        "MLSD Value Threshold", 0.01, 2.0, 0.01)
    assert distance["label"] == "MLSD Distance Threshold"
    assert all(update == {"__type__": "update", "visible": False}
               for update in controlnet.slider_updates(find("none"), pixel_perfect=False))
    _, kept, _ = controlnet.slider_updates(find("canny"), False, {"threshold_a": 999})
    assert kept["value"] == 255   # a pasted value outside the slider's range is brought into it


def test_a_control_type_filters_the_lists_and_picks_its_defaults(services):
    module, model, resolution, low, high = controlnet.choose_type(services, "Canny", pixel_perfect=False)
    assert module["value"] == "canny" and "canny" in module["choices"]
    assert not any(name.startswith("depth") for name in module["choices"])
    assert model["value"] in model["choices"] and title_of(services, SD15) in model["choices"]
    assert low["label"] == "Low Threshold" and low["visible"] is True
    everything, _, *_ = controlnet.choose_type(services, "All", pixel_perfect=False)
    assert everything["value"] == "none" and "depth_midas" in everything["choices"]
    offered = controlnet.type_choices(controlnet.control_types(services))
    assert offered[0] == "All" and {"Canny", "Depth", "OpenPose"} <= set(offered)
    assert "IP-Adapter" not in offered   # nothing here runs it


def test_run_preprocessor_shows_the_map_or_says_what_is_wrong(services):
    detected = controlnet.preview_map(services, 0, photo(), "canny", 64, 100, 200, False, "Crop and Resize", 64, 64)
    pixels = np.asarray(detected.convert("L"))
    assert set(np.unique(pixels)) <= {0, 255} and pixels.max() == 255   # white edges on black
    with pytest.raises(gr.Error, match="Upload a control image first"):
        controlnet.preview_map(services, 0, None, "canny", 64, 100, 200, False, "Crop and Resize", 64, 64)
    with pytest.raises(gr.Error, match="dpt_hybrid"):   # weights missing from models/annotators: named
        controlnet.preview_map(services, 1, photo(), "depth_midas", 64, 0, 0, False, "Crop and Resize", 64, 64)


def test_the_model_list_offers_the_controlnets_of_the_loaded_checkpoints_family(services):
    assert controlnet.model_choices(services) == ["None", title_of(services, SD15), title_of(services, SDXL)]
    job = services.switch_model("tiny-sd1")
    assert job.state == "done", job.error
    assert controlnet.model_choices(services) == ["None", title_of(services, SD15)]
    # A unit's pick for another family stays listed (Generate then says why it cannot be used), not reset.
    assert controlnet.model_choices(services, keep=title_of(services, SDXL)) == [
        "None", title_of(services, SD15), title_of(services, SDXL)]
    assert controlnet.model_choices(services, keep="no-such-model") == ["None", title_of(services, SD15)]


def test_a_model_whose_name_says_no_type_is_offered_under_every_type(services):
    untyped = services.controlnet.registry.folder / "my_guide.safetensors"
    write_controlnet(build_tiny_controlnet("sd1", seed=1), untyped)
    try:
        services.controlnet.registry.refresh()
        title = title_of(services, "my_guide")
        _, canny_models, *_ = controlnet.choose_type(services, "Canny", pixel_perfect=False)
        assert title_of(services, SD15) in canny_models["choices"] and title in canny_models["choices"]
        assert canny_models["value"] == title_of(services, SD15)   # the default is still the one named for it
        _, depth_models, *_ = controlnet.choose_type(services, "Depth", pixel_perfect=False)
        assert title in depth_models["choices"] and title_of(services, SD15) not in depth_models["choices"]
        assert depth_models["value"] == "None"
    finally:
        untyped.unlink()
        services.controlnet.registry.refresh()


def test_the_family_mismatch_is_said_when_the_job_prepares_the_unit(services):
    from modules.controlnet.plan import ControlNetError
    from modules.controlnet.units import ControlNetUnit
    from modules.models import families

    unit = ControlNetUnit.model_validate({"enabled": True, "module": "none", "model": title_of(services, SD15),
                                          "image": photo()}, context={"controlnet": services.controlnet})
    with pytest.raises(ControlNetError) as raised:
        services.controlnet.prepare([unit], families.SDXL, 64, 64, None)
    assert (f"the ControlNet model {title_of(services, SD15)} is for SD 1.x, the checkpoint is SDXL"
            in str(raised.value)), str(raised.value)
