"""ControlNet guiding txt2img, img2img, inpaint and hires fix, end to end on tiny checkpoints and ControlNets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from pydantic import ValidationError

from modules import cmd_args, services as services_module
from modules.controlnet.control import resize_map
from modules.controlnet.models import load_controlnet
from modules.controlnet.plan import PreparedUnit
from modules.controlnet.units import ControlNetUnit
from modules.output.infotext import infotext_to_request_fields, parse_infotext
from modules.generation.request import validate_request
from modules.jobs import JobError
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_controlnets import build_tiny_controlnet, write_controlnet

SMALL = {"width": 64, "height": 64, "steps": 4}


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    checkpoints = {f"tiny-{family}.safetensors": build_tiny_model(family)
                   for family in ("sd1", "sd2", "sdxl", "sd1_inpaint")}
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), checkpoints)
    folder = data / "models" / "ControlNet"
    folder.mkdir(parents=True, exist_ok=True)
    write_controlnet(build_tiny_controlnet("sd1"), folder / "control_tiny_sd15_canny.safetensors")
    write_controlnet(build_tiny_controlnet("sd1", seed=3), folder / "control_tiny_sd15_depth.pth")
    write_controlnet(build_tiny_controlnet("sd2"), folder / "control_tiny_sd21_canny.safetensors")
    write_controlnet(build_tiny_controlnet("sdxl"), folder / "control_tiny_sdxl_canny.safetensors",
                     layout="diffusers")
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data)]))
    built.options.update({"sd_checkpoints_limit": 8})
    yield built
    built.shutdown()


def photo(width: int = 64, height: int = 64) -> Image.Image:
    """Clouds of a kind: a soft gradient with a bright disc and a dark bar (edges for canny to find)."""
    x = np.linspace(40, 200, width, dtype=np.float32)[None, :]
    array = np.repeat(np.broadcast_to(x, (height, width))[:, :, None], 3, axis=2).astype(np.uint8)
    image = Image.fromarray(array, "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 8, height // 8, width // 2, height // 2), fill=(250, 250, 250))
    draw.rectangle((width // 2, height * 2 // 3, width - 4, height - 8), fill=(10, 10, 10))
    return image


def unit(**fields) -> dict:
    return {"module": "canny", "model": "control_tiny_sd15_canny", "image": photo(), "processor_res": 64, **fields}


def request(services, **fields):
    data = {"prompt": "clouds over a street", "checkpoint": "tiny-sd1", "seed": 11, **SMALL, **fields}
    return validate_request(data, services.registry, services.networks, controlnet=services.controlnet)


def run(services, **fields):
    built = request(services, **fields)
    job = services.submit_img2img(built) if built.init_images else services.submit_txt2img(built)
    assert job.done.wait(300)
    assert job.state == "done", job.error
    return job.result


def failure(services, **fields):
    built = request(services, **fields)
    job = services.submit_img2img(built) if built.init_images else services.submit_txt2img(built)
    assert job.done.wait(300)
    assert job.state == "failed"
    return job


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def differs(a: Image.Image, b: Image.Image) -> bool:
    return np.abs(pixels(a) - pixels(b)).max() > 0


# ------------------------------------------------------------------ txt2img

def test_controlnet_changes_the_image_and_shows_the_annotation(services):
    plain = run(services).images[0]
    result = run(services, controlnet_units=[unit()])
    image = result.images[0]
    assert image.size == (64, 64) and differs(image, plain)
    assert len(result.detected_maps) == 1
    detected = pixels(result.detected_maps[0])
    assert set(np.unique(detected)) <= {0, 255} and detected.max() == 255   # canny: white edges on black
    parsed = parse_infotext(image.info["parameters"])
    value = parsed["ControlNet 0"]
    assert value.startswith("Module: canny, Model: control_tiny_sd15_canny [")
    assert "Weight: 1.0" in value and "Processor Res: 64" in value and "Control Mode: Balanced" in value
    pasted = infotext_to_request_fields(parsed)["fields"]["controlnet_units"][0]
    assert pasted["module"] == "canny" and pasted["model"].startswith("control_tiny_sd15_canny [")
    assert pasted["processor_res"] == 64 and pasted["threshold_a"] == 100.0


def test_same_seed_same_pixels_with_controlnet(services):
    first = run(services, controlnet_units=[unit()]).images[0]
    second = run(services, controlnet_units=[unit()]).images[0]
    assert not differs(first, second)


def test_weight_zero_equals_no_controlnet(services):
    plain = run(services).images[0]
    zero = run(services, controlnet_units=[unit(weight=0.0)]).images[0]
    assert not differs(plain, zero)


def test_disabled_unit_changes_nothing(services):
    plain = run(services).images[0]
    disabled = run(services, controlnet_units=[unit(enabled=False)])
    assert not differs(plain, disabled.images[0]) and not disabled.detected_maps
    assert "ControlNet 0" not in disabled.images[0].info["parameters"]


def test_guidance_end_half_differs_from_full(services):
    full = run(services, controlnet_units=[unit()]).images[0]
    half = run(services, controlnet_units=[unit(guidance_end=0.5)]).images[0]
    plain = run(services).images[0]
    assert differs(full, half) and differs(half, plain)
    late = run(services, controlnet_units=[unit(guidance_start=1.0)]).images[0]   # never active in 4 steps
    assert not differs(late, plain)


@pytest.mark.parametrize("mode", ["My prompt is more important", "ControlNet is more important"])
def test_control_modes_differ_from_balanced(services, mode):
    balanced = run(services, controlnet_units=[unit()]).images[0]
    other = run(services, controlnet_units=[unit(control_mode=mode)])
    assert differs(balanced, other.images[0])
    assert f"Control Mode: {mode}" in other.images[0].info["parameters"]


def test_pooled_shuffle_controlnets_guide_only_the_prompt_half(tmp_path):
    """As in the extension (and diffusers' guess mode), a globally pooled ControlNet leaves the negative
    prompt's half of the CFG batch alone, like "ControlNet is more important" does."""
    path = write_controlnet(build_tiny_controlnet("sd1"), tmp_path / "control_v11e_sd15_shuffle.safetensors")
    model = load_controlnet(path, torch.float32)[0]
    prepared = PreparedUnit(unit=ControlNetUnit(module="shuffle", model="shuffle"), model=model,
                            title="shuffle", detected_map=photo(), processor_res=64, thresholds=(None, None))
    control = prepared.for_pass(64, 64, hires_pass=False, hires_enabled=False)
    generator = torch.Generator().manual_seed(0)
    context = torch.randn(2, 8, model.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        down, mid = control.residuals(torch.randn(2, 4, 8, 8, generator=generator), torch.tensor(500), context,
                                      None, images=1)
    assert all(residual[0].abs().max() == 0 and residual[1].abs().max() > 0 for residual in [*down, mid])


def test_multi_controlnet(services):
    one = run(services, controlnet_units=[unit()]).images[0]
    depth = unit(module="none", model="control_tiny_sd15_depth", image=photo().transpose(Image.FLIP_LEFT_RIGHT))
    both = run(services, controlnet_units=[unit(), depth])
    assert differs(one, both.images[0]) and len(both.detected_maps) == 2
    parsed = parse_infotext(both.images[0].info["parameters"])
    assert parsed["ControlNet 1"].startswith("Module: none, Model: control_tiny_sd15_depth [")


def test_resize_modes_and_pixel_perfect(services):
    wide = photo(128, 64)
    modes = ("Just Resize", "Crop and Resize", "Resize and Fill")
    results = [run(services, controlnet_units=[unit(image=wide, resize_mode=mode)]) for mode in modes]
    for mode, result in zip(modes, results):
        assert result.images[0].size == (64, 64) and f"Resize Mode: {mode}" in result.infotexts[0]
    # What each mode guides the UNet with: the 128×64 annotation squeezed, cropped or padded to 64×64. (The tiny
    # ControlNet moves the output itself by about one level in a pixel or two: too little to compare reliably.)
    guides = [resize_map(results[0].detected_maps[0], index, 64, 64) for index in range(len(modes))]
    assert differs(guides[0], guides[1]) and differs(guides[1], guides[2]) and differs(guides[0], guides[2])
    perfect = run(services, controlnet_units=[unit(image=wide, pixel_perfect=True, processor_res=-1)])
    assert "Processor Res: 64" in perfect.images[0].info["parameters"]   # the map lands 1:1 on 64×64


def test_composable_prompt_with_controlnet(services):
    result = run(services, prompt="clouds AND a street", controlnet_units=[unit()])
    assert result.images[0].size == (64, 64)


@pytest.mark.parametrize("checkpoint,model", [("tiny-sd2", "control_tiny_sd21_canny"),
                                              ("tiny-sdxl", "control_tiny_sdxl_canny")])
def test_sd2_and_sdxl_controlnets(services, checkpoint, model):
    plain = run(services, checkpoint=checkpoint).images[0]
    guided = run(services, checkpoint=checkpoint, controlnet_units=[unit(model=model)]).images[0]
    assert differs(plain, guided)


# ------------------------------------------------------------------ img2img, inpaint, hires fix

def test_img2img_uses_its_image_when_the_unit_has_none(services):
    plain = run(services, init_images=[photo()], denoising_strength=0.8).images[0]
    guided = run(services, init_images=[photo()], denoising_strength=0.8, controlnet_units=[unit(image=None)])
    assert differs(plain, guided.images[0]) and len(guided.detected_maps) == 1


def test_img2img_with_a_separate_control_image(services):
    own = run(services, init_images=[photo()], denoising_strength=0.8, controlnet_units=[unit(image=None)])
    other = run(services, init_images=[photo()], denoising_strength=0.8,
                controlnet_units=[unit(image=photo().rotate(90))])
    assert differs(own.images[0], other.images[0])


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sd1_inpaint"])
def test_inpaint_with_controlnet(services, checkpoint):
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    fields = dict(checkpoint=checkpoint, init_images=[photo()], mask=mask, denoising_strength=0.9)
    plain = run(services, **fields).images[0]
    guided = run(services, **fields, controlnet_units=[unit()]).images[0]
    assert differs(plain, guided)
    kept = pixels(guided)[:, 40:]   # outside the mask (and its blur) the original stays
    assert np.abs(kept - pixels(plain)[:, 40:]).max() <= 2
    only_masked = run(services, **fields, inpaint_full_res=True, controlnet_units=[unit()])
    assert only_masked.images[0].size == (64, 64)


def test_hires_fix_with_controlnet(services):
    hires = dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.6)
    both = run(services, **hires, controlnet_units=[unit()]).images[0]
    low_only = run(services, **hires, controlnet_units=[unit(hr_option="Low res only")]).images[0]
    assert both.size == (96, 96) and differs(both, low_only)
    assert "Hr Option: Low res only" in low_only.info["parameters"]


# ------------------------------------------------------------------ bad input: clear errors, nothing disturbed

def test_controlnet_for_another_family_is_refused(services):
    job = failure(services, checkpoint="tiny-sdxl", controlnet_units=[unit()])
    assert job.error_kind is JobError
    assert "ControlNet unit 0" in job.error and "SD 1.x" in job.error and "SDXL" in job.error
    assert run(services).images   # the server keeps working


def test_txt2img_unit_without_image_is_refused(services):
    job = failure(services, controlnet_units=[unit(image=None)])
    assert job.error_kind is JobError and "image" in job.error


@pytest.mark.parametrize("fields,field", [
    ({"module": "sparkles"}, "module"),
    ({"model": "missing [deadbeef]"}, "model"),
    ({"model": "None"}, "model"),
    ({"weight": 3}, "weight"),
    ({"resize_mode": "Stretch a lot"}, "resize_mode"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "guidance_end"),
])
def test_bad_units_fail_validation_naming_the_field(services, fields, field):
    with pytest.raises(ValidationError) as error:
        request(services, controlnet_units=[unit(**fields)])
    assert field in str(error.value) and "controlnet_units" in str(error.value)


def test_empty_control_image_is_refused(services):
    with pytest.raises(ValidationError) as error:
        request(services, controlnet_units=[unit(image=Image.new("RGB", (0, 0)))])
    assert "image" in str(error.value)
