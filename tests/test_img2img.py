"""img2img, inpainting, hires fix and the refiner end to end on tiny checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules import cmd_args, services as services_module
from modules.output.infotext import parse_infotext
from modules.generation.request import validate_request
from modules.jobs import JobError
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.pictures import photo

SMALL = {"width": 64, "height": 64, "steps": 4}


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    checkpoints = {f"tiny-{family}.safetensors": build_tiny_model(family)
                   for family in ("sd1", "sdxl", "sdxl_refiner", "sd1_inpaint", "sdxl_inpaint")}
    checkpoints["tiny-sd1-other.safetensors"] = build_tiny_model("sd1", seed=7)
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), checkpoints)
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data)]))
    built.options.update({"sd_checkpoints_limit": 8})
    yield built
    built.shutdown()


def left_half_mask(width: int = 64, height: int = 64) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, width // 2 - 1, height - 1), fill=255)
    return mask


def run(services, kind: str = "img2img", **fields):
    data = {"prompt": "a photo of a cat", "checkpoint": "tiny-sd1", "seed": 5, **SMALL, **fields}
    request = validate_request(data, services.registry, services.networks)
    job = services.submit_img2img(request) if kind == "img2img" else services.submit_txt2img(request)
    assert job.done.wait(300)
    assert job.state == "done", job.error
    return job.result


def failure(services, kind: str = "img2img", **fields):
    data = {"prompt": "x", "checkpoint": "tiny-sd1", "seed": 5, **SMALL, **fields}
    request = validate_request(data, services.registry, services.networks)
    job = services.submit_img2img(request) if kind == "img2img" else services.submit_txt2img(request)
    assert job.done.wait(300)
    assert job.state == "failed"
    return job


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# ------------------------------------------------------------------ img2img

@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sdxl", "tiny-sd1_inpaint", "tiny-sdxl_inpaint",
                                        "tiny-sdxl_refiner"])
def test_img2img_gives_an_image_of_the_requested_size_with_infotext(services, checkpoint):
    result = run(services, init_images=[photo(80, 64)], checkpoint=checkpoint, width=72, height=64,
                 denoising_strength=0.6)
    image = result.images[0]
    assert image.size == (72, 64)
    parsed = parse_infotext(image.info["parameters"])
    assert parsed["Denoising strength"] == "0.6" and parsed["Model"] == checkpoint
    assert "img2img-images" in result.saved[0]
    assert pixels(image).std() > 0


def test_the_same_seed_gives_the_same_pixels_and_strength_matters(services):
    first = run(services, init_images=[photo()], denoising_strength=0.5).images[0]
    again = run(services, init_images=[photo()], denoising_strength=0.5).images[0]
    stronger = run(services, init_images=[photo()], denoising_strength=0.9).images[0]
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(stronger))


def test_lower_strength_stays_closer_to_the_input(services):
    # Strength 0 is the input through the (random, tiny) VAE and back: the reference for "close".
    source = pixels(run(services, init_images=[photo()], denoising_strength=0.0).images[0])
    light = run(services, init_images=[photo()], denoising_strength=0.2).images[0]
    heavy = run(services, init_images=[photo()], denoising_strength=1.0).images[0]
    assert np.abs(pixels(light) - source).mean() < np.abs(pixels(heavy) - source).mean()


@pytest.mark.parametrize("resize_mode", [0, 1, 2, 3])
def test_every_resize_mode_gives_the_requested_size(services, resize_mode):
    result = run(services, init_images=[photo(96, 48)], resize_mode=resize_mode, width=64, height=64)
    assert result.images[0].size == (64, 64)


def test_a_batch_cycles_the_init_images_and_makes_a_grid(services):
    result = run(services, init_images=[photo(), photo().transpose(Image.FLIP_LEFT_RIGHT)], batch_size=2)
    assert len(result.images) == 3 and result.index_of_first_image == 1   # grid first
    assert any("img2img-grids" in path for path in result.saved)


# ------------------------------------------------------------------ inpainting

@pytest.mark.parametrize("checkpoint, fill", [("tiny-sd1", 0), ("tiny-sd1", 1), ("tiny-sd1", 2), ("tiny-sd1", 3),
                                              ("tiny-sd1_inpaint", 1), ("tiny-sd1_inpaint", 2), ("tiny-sdxl", 1),
                                              ("tiny-sdxl", 2), ("tiny-sdxl_inpaint", 1)])
def test_inpainting_changes_only_the_masked_area(services, checkpoint, fill):
    source = photo()
    result = run(services, init_images=[source], mask=left_half_mask(), mask_blur=0, inpainting_fill=fill,
                 denoising_strength=1.0 if fill >= 2 else 0.75, checkpoint=checkpoint)
    out = pixels(result.images[0])
    assert np.array_equal(out[:, 32:], pixels(source)[:, 32:]), "pixels outside the mask changed"
    assert not np.array_equal(out[:, :32], pixels(source)[:, :32]), "the masked area was not repainted"
    parsed = parse_infotext(result.images[0].info["parameters"])
    assert parsed["Masked content"] == ["fill", "original", "latent noise", "latent nothing"][fill]


def test_inverted_mask_repaints_the_other_side(services):
    source = photo()
    result = run(services, init_images=[source], mask=left_half_mask(), mask_blur=0, inpainting_mask_invert=1)
    out = pixels(result.images[0])
    assert np.array_equal(out[:, :32], pixels(source)[:, :32])
    assert "Mask mode: Inpaint not masked" in result.images[0].info["parameters"]


def test_mask_blur_blends_the_edge_and_is_in_the_infotext(services):
    source = photo()
    result = run(services, init_images=[source], mask=left_half_mask(), mask_blur=4)
    out = pixels(result.images[0])
    assert np.array_equal(out[:, 48:], pixels(source)[:, 48:])   # far from the edge: the original
    assert "Mask blur: 4" in result.images[0].info["parameters"]


def test_only_masked_works_at_the_model_size_and_pastes_back_into_the_full_picture(services):
    source = photo(160, 128)
    mask = Image.new("L", source.size, 0)
    ImageDraw.Draw(mask).rectangle((40, 40, 71, 71), fill=255)
    result = run(services, init_images=[source], mask=mask, mask_blur=0, inpaint_full_res=True,
                 inpaint_full_res_padding=8)
    image = result.images[0]
    assert image.size == source.size   # the original's size, not 64x64
    out, original = pixels(image), pixels(source)
    outside = np.ones(original.shape[:2], bool)
    outside[40:72, 40:72] = False
    assert np.array_equal(out[outside], original[outside])
    assert not np.array_equal(out[40:72, 40:72], original[40:72, 40:72])
    parsed = parse_infotext(image.info["parameters"])
    assert parsed["Inpaint area"] == "Only masked" and parsed["Masked area padding"] == "8"


def test_a_mask_of_another_size_is_stretched_onto_the_image(services):
    result = run(services, init_images=[photo()], mask=left_half_mask(32, 32), mask_blur=0)
    assert np.array_equal(pixels(result.images[0])[:, 32:], pixels(photo())[:, 32:])


def test_only_masked_with_nothing_painted_is_plain_img2img(services):
    # A1111: no masked area means no region to crop, so the whole picture is processed at the model size.
    result = run(services, init_images=[photo(96, 96)], mask=Image.new("L", (96, 96), 0), inpaint_full_res=True)
    assert result.images[0].size == (64, 64)


def test_txt2img_refuses_init_images_and_img2img_needs_one(services):
    assert "init_images" in failure(services, kind="txt2img", init_images=[photo()]).error
    assert "init_images" in failure(services).error


# ------------------------------------------------------------------ hires fix

def test_hires_fix_doubles_the_size_and_records_its_infotext(services):
    result = run(services, kind="txt2img", enable_hr=True, hr_scale=2.0, hr_upscaler="Latent",
                 denoising_strength=0.6, hr_second_pass_steps=3)
    image = result.images[0]
    assert image.size == (128, 128)
    parsed = parse_infotext(image.info["parameters"])
    assert parsed["Size-1"] == "64"   # A1111 writes the first pass's size
    assert parsed["Hires upscale"] == "2" and parsed["Hires upscaler"] == "Latent"
    assert parsed["Hires steps"] == "3" and parsed["Denoising strength"] == "0.6"
    again = run(services, kind="txt2img", enable_hr=True, hr_scale=2.0, hr_upscaler="Latent",
                denoising_strength=0.6, hr_second_pass_steps=3)
    assert np.array_equal(pixels(image), pixels(again.images[0]))


@pytest.mark.parametrize("upscaler", ["Lanczos", "Nearest", "Latent (nearest-exact)", "Latent (bicubic antialiased)"])
def test_hires_fix_with_each_kind_of_upscaler(services, upscaler):
    result = run(services, kind="txt2img", enable_hr=True, hr_scale=1.5, hr_upscaler=upscaler)
    assert result.images[0].size == (96, 96)
    assert f"Hires upscaler: {upscaler}" in result.images[0].info["parameters"]


@pytest.mark.parametrize("resize, size", [((96, 128), (96, 128)), ((128, 0), (128, 128)), ((0, 96), (96, 96))])
def test_hires_resize_to_gives_that_size(services, resize, size):
    result = run(services, kind="txt2img", enable_hr=True, hr_resize_x=resize[0], hr_resize_y=resize[1],
                 hr_upscaler="Lanczos")
    assert result.images[0].size == size
    assert f"Hires resize: {resize[0]}x{resize[1]}" in result.images[0].info["parameters"]


def test_hires_fix_with_its_own_sampler_and_prompt(services):
    result = run(services, kind="txt2img", enable_hr=True, hr_sampler_name="Euler a", hr_prompt="a dog",
                 hr_upscaler="Latent")
    parsed = parse_infotext(result.images[0].info["parameters"])
    assert parsed["Hires sampler"] == "Euler a" and parsed["Hires prompt"] == "a dog"


def test_hires_fix_on_sdxl_and_an_inpainting_model(services):
    for checkpoint in ("tiny-sdxl", "tiny-sd1_inpaint"):
        result = run(services, kind="txt2img", checkpoint=checkpoint, enable_hr=True, hr_upscaler="Latent")
        assert result.images[0].size == (128, 128)


# ------------------------------------------------------------------ refiner

@pytest.mark.parametrize("base, refiner", [("tiny-sdxl", "tiny-sdxl_refiner"), ("tiny-sd1", "tiny-sd1-other")])
def test_the_refiner_takes_over_and_is_recorded(services, base, refiner):
    plain = run(services, kind="txt2img", checkpoint=base).images[0]
    refined = run(services, kind="txt2img", checkpoint=base, refiner_checkpoint=refiner,
                  refiner_switch_at=0.5).images[0]
    again = run(services, kind="txt2img", checkpoint=base, refiner_checkpoint=refiner,
                refiner_switch_at=0.5).images[0]
    assert not np.array_equal(pixels(plain), pixels(refined))
    assert np.array_equal(pixels(refined), pixels(again))
    parsed = parse_infotext(refined.info["parameters"])
    assert parsed["Refiner"].startswith(refiner) and parsed["Refiner switch at"] == "0.5"
    assert services.models.current.info.stem == base   # the refiner did not become the current model


def test_the_refiner_in_img2img(services):
    result = run(services, init_images=[photo()], checkpoint="tiny-sdxl", refiner_checkpoint="tiny-sdxl_refiner",
                 refiner_switch_at=0.5, denoising_strength=0.8)
    assert "Refiner: tiny-sdxl_refiner" in result.images[0].info["parameters"]


def test_a_refiner_of_another_family_is_a_clear_error(services):
    job = failure(services, kind="txt2img", refiner_checkpoint="tiny-sdxl_refiner")
    assert "refiner_checkpoint" in job.error and job.error_kind is JobError


# ------------------------------------------------------------------ request checks and scripts

@pytest.mark.parametrize("fields, named", [
    ({"hr_upscaler": "Sparkle 9x", "enable_hr": True}, "hr_upscaler"),
    ({"refiner_checkpoint": "no-such-model"}, "refiner_checkpoint"),
    ({"mask": Image.new("L", (64, 64))}, "mask"),
    ({"enable_hr": True, "hr_scale": 8.0, "width": 512, "height": 512}, "hr_scale"),
    ({"init_images": ["not an image"]}, "init_images"),
])
def test_bad_img2img_fields_are_named(services, fields, named):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        validate_request({"prompt": "x", **fields}, services.registry, services.networks, services.upscalers)
    assert named in str(caught.value)


@pytest.mark.parametrize("sampler", ["Euler a", "DPM2 a", "DPM++ 2M SDE", "DPM++ 3M SDE"])
def test_samplers_that_add_noise_each_step_repeat_with_the_same_seed(services, sampler):
    first = run(services, kind="txt2img", sampler_name=sampler, seed=21).images[0]
    again = run(services, kind="txt2img", sampler_name=sampler, seed=21).images[0]
    other = run(services, kind="txt2img", sampler_name=sampler, seed=22).images[0]
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(other))
    image = run(services, init_images=[photo()], sampler_name=sampler, seed=21).images[0]
    assert np.array_equal(pixels(image), pixels(run(services, init_images=[photo()], sampler_name=sampler,
                                                    seed=21).images[0]))


@pytest.mark.parametrize("model", ["tiny_esrgan_2x", "tiny_compact_x4"])
def test_hires_fix_and_img2img_resizing_with_an_upscaler_model(services, model):
    from tests.fixtures.tiny_upscalers import write_upscaler_models

    write_upscaler_models(services.paths.models)
    services.upscalers.refresh()
    result = run(services, kind="txt2img", enable_hr=True, hr_upscaler=model, hr_scale=2.0)
    assert result.images[0].size == (128, 128)
    assert f"Hires upscaler: {model}" in result.images[0].info["parameters"]
    # and as img2img's upscaler for enlarging inputs (A1111's upscaler_for_img2img setting)
    lanczos = run(services, init_images=[photo(32, 32)], denoising_strength=0.3).images[0]
    services.options.update({"upscaler_for_img2img": model})
    try:
        upscaled = run(services, init_images=[photo(32, 32)], denoising_strength=0.3).images[0]
    finally:
        services.options.update({"upscaler_for_img2img": "None"})
    assert upscaled.size == (64, 64)
    assert not np.array_equal(pixels(upscaled), pixels(lanczos))   # the model, not Lanczos, enlarged the input
