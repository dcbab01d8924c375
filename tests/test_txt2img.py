"""txt2img end to end on tiny checkpoints: images, files, infotext, seeds, jobs."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, services as services_module
from modules.output.infotext import infotext_to_request_fields, parse_infotext
from modules.generation.request import validate_request
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model, mark_as_v_prediction_sd2

SMALL = {"width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    v_model = build_tiny_model("sd2")
    mark_as_v_prediction_sd2(v_model.state_dict)
    checkpoints = {f"tiny-{family}.safetensors": build_tiny_model(family)
                   for family in ("sd1", "sdxl", "sdxl_refiner", "sd1_inpaint", "sd2_inpaint", "sdxl_inpaint")}
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"),
                                     {**checkpoints, "tiny-sd2-v.safetensors": v_model})
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data)]))
    built.options.update({"sd_checkpoints_limit": 8})
    yield built
    built.shutdown()


def generate(services, **fields):
    request = validate_request({"prompt": "a photo of a cat", "checkpoint": "tiny-sd1", **SMALL, **fields},
                               services.registry)
    job = services.submit_txt2img(request)
    assert job.done.wait(300)
    assert job.state == "done", job.error
    return job.result


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("checkpoint, family", [("tiny-sd1", "sd1"), ("tiny-sd2-v", "sd2"), ("tiny-sdxl", "sdxl"),
                                                ("tiny-sd1_inpaint", "sd1"), ("tiny-sd2_inpaint", "sd2"),
                                                ("tiny-sdxl_inpaint", "sdxl")])
def test_each_family_generates_an_image_with_infotext(services, checkpoint, family):
    result = generate(services, checkpoint=checkpoint, seed=11, width=72, height=64)
    assert services.models.current.family.id == family
    image = result.images[0]
    assert image.size == (72, 64)
    assert np.isfinite(pixels(image)).all() and pixels(image).std() > 0
    saved = Image.open(result.saved[0])
    parsed = parse_infotext(saved.info["parameters"])
    assert parsed["Seed"] == "11" and parsed["Size-1"] == "72" and parsed["Size-2"] == "64"
    assert parsed["Model"] == checkpoint and len(parsed["Model hash"]) == 10
    # the path is outputs/txt2img-images/YYYY-MM-DD/NNNNN-SEED.png
    path = result.saved[0]
    assert "/outputs/txt2img-images/" in path and path.endswith("-11.png")


def test_v_prediction_model_uses_a_v_prediction_scheduler(services):
    generate(services, checkpoint="tiny-sd2-v", seed=1)
    model = services.models.current
    assert model.spec.prediction_type == "v_prediction"
    assert model.pipeline.scheduler.prediction_type == "v_prediction"
    # SD's training schedule (not the legacy loader's broken betas): sigma_max 14.6146, sigma_min 0.0292
    sigmas = ((1 - model.alphas_cumprod) / model.alphas_cumprod) ** 0.5
    assert abs(sigmas[-1].item() - 14.6146) < 1e-3 and abs(sigmas[0].item() - 0.0292) < 1e-4


def test_same_seed_same_pixels_different_seed_different(services):
    first = generate(services, seed=123, save_images=False).images[0]
    again = generate(services, seed=123, save_images=False).images[0]
    other = generate(services, seed=124, save_images=False).images[0]
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(other))


def test_batch_seeds_and_grid(services):
    result = generate(services, seed=1000, batch_size=2, n_iter=2)
    assert result.seeds == [1000, 1001, 1002, 1003]
    assert result.index_of_first_image == 1 and len(result.images) == 5
    assert result.images[0].size == (128, 128)                     # the grid comes first
    assert any("txt2img-grids" in path for path in result.saved)
    single = generate(services, seed=1002, save_images=False).images[0]
    # image i of a batch uses seed + i (batched matmuls may differ in the last bit, hence the tolerance)
    assert np.abs(pixels(single) - pixels(result.images[3])).max() <= 2
    assert np.abs(pixels(single) - pixels(result.images[2])).max() > 2


def test_variation_seed(services):
    base = generate(services, seed=5, save_images=False).images[0]
    zero = generate(services, seed=5, subseed=9, subseed_strength=0.0, save_images=False).images[0]
    varied = generate(services, seed=5, subseed=9, subseed_strength=0.5, save_images=False)
    assert np.array_equal(pixels(base), pixels(zero))
    assert not np.array_equal(pixels(base), pixels(varied.images[0]))
    parsed = parse_infotext(varied.infotexts[0])
    assert parsed["Variation seed"] == "9" and parsed["Variation seed strength"] == "0.5"


def test_tiling_and_clip_skip_change_the_image(services):
    base = generate(services, seed=8, save_images=False)
    tiled = generate(services, seed=8, tiling=True, save_images=False)
    skipped = generate(services, seed=8, clip_skip=2, save_images=False)
    assert not np.array_equal(pixels(base.images[0]), pixels(tiled.images[0]))
    assert not np.array_equal(pixels(base.images[0]), pixels(skipped.images[0]))
    assert "Tiling: True" in tiled.infotexts[0] and "Clip skip: 2" in skipped.infotexts[0]
    # tiling is undone after the job
    assert all(conv.padding_mode == "zeros" for conv in services.models.current.pipeline.unet.modules()
               if hasattr(conv, "padding_mode"))


def test_long_prompts_use_more_chunks(services):
    words = " ".join(f"word{i}" for i in range(60))          # well over 75 tokens
    long_result = generate(services, prompt=words, seed=3, save_images=False)
    truncated = generate(services, prompt=" ".join(words.split()[:20]), seed=3, save_images=False)
    assert not np.array_equal(pixels(long_result.images[0]), pixels(truncated.images[0]))


def test_infotext_round_trip_to_the_same_request(services):
    result = generate(services, prompt="a, b: c\nsecond line", negative_prompt="ugly", seed=77, cfg_scale=6.5,
                      sampler_name="Euler a", subseed=4, subseed_strength=0.25, save_images=False)
    fields = infotext_to_request_fields(parse_infotext(result.infotexts[0]))["fields"]
    again = validate_request({k: v for k, v in fields.items() if k in (
        "prompt", "negative_prompt", "steps", "sampler_name", "scheduler", "cfg_scale", "seed", "width", "height",
        "subseed", "subseed_strength")}, services.registry)
    assert (again.prompt, again.negative_prompt, again.seed, again.cfg_scale, again.sampler_name, again.steps) == \
        ("a, b: c\nsecond line", "ugly", 77, 6.5, "Euler a", 3)
    assert (again.subseed, again.subseed_strength, again.width, again.height) == (4, 0.25, 64, 64)


def test_refiner_alone_fails_with_a_clear_message(services):
    request = validate_request({"prompt": "x", "checkpoint": "tiny-sdxl_refiner", **SMALL}, services.registry)
    job = services.submit_txt2img(request)
    job.done.wait(120)
    assert job.state == "failed" and "refiner" in job.error
    assert generate(services, seed=1, save_images=False).images     # the queue keeps working


def test_interrupt_stops_only_that_job(services):
    long_request = validate_request({"prompt": "x", "checkpoint": "tiny-sd1", "width": 64, "height": 64,
                                     "steps": 500, "seed": 1, "save_images": False}, services.registry)
    running = services.submit_txt2img(long_request)
    waiting = services.submit_txt2img(long_request.model_copy(update={"steps": 2}))
    deadline = time.time() + 60
    while running.step == 0 and time.time() < deadline:
        time.sleep(0.02)
    assert services.queue.interrupt("no-such-job") is False
    assert services.queue.interrupt(running.id) is True
    assert running.done.wait(120) and running.state == "interrupted" and running.step < 500
    assert running.result.images                                   # partial result decoded, as A1111 does
    assert waiting.done.wait(120) and waiting.state == "done" and not waiting.interrupted


def test_interrupting_a_queued_job_removes_it(services):
    long_request = validate_request({"prompt": "x", "checkpoint": "tiny-sd1", "width": 64, "height": 64,
                                     "steps": 300, "seed": 1, "save_images": False}, services.registry)
    running = services.submit_txt2img(long_request)
    queued = services.submit_txt2img(long_request)
    assert services.queue.interrupt(queued.id) is True
    assert queued.state == "cancelled"
    services.queue.interrupt(running.id)
    running.done.wait(120)


def test_progress_and_preview_during_sampling(services):
    services.options.update({"show_progress_every_n_steps": 1})
    request = validate_request({"prompt": "x", "checkpoint": "tiny-sd1", "width": 64, "height": 64,
                                "steps": 200, "seed": 1, "save_images": False}, services.registry)
    job = services.submit_txt2img(request)
    deadline = time.time() + 60
    while (job.preview is None or job.step < 2) and time.time() < deadline:
        time.sleep(0.02)
    assert job.preview is not None and job.preview.size == (8, 8)
    assert 0 < job.progress < 1 and job.eta is not None
    services.queue.interrupt(job.id)
    job.done.wait(120)
