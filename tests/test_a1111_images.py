"""What an A1111 user relies on when bringing seeds over, end to end on a tiny checkpoint: image i of a batch is the
image its seed gives alone (the step noise too), the noise source and sampler settings are recorded in infotext
as A1111 records them, and pasting an infotext brings its settings along (no "RNG" key means GPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules import cmd_args, services as services_module
from modules.diffusion import sampling
from modules.generation.request import validate_request
from modules.output.infotext import parse_infotext
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model

SMALL = {"width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    stored = build_tiny_model("sd1")
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    # Real checkpoints store their schedule, often in fp16: the samplers take the stored values.
    stored.state_dict["alphas_cumprod"] = torch.cumprod(1 - betas, 0).to(torch.float16)
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("data"), {
        "tiny-sd1.safetensors": build_tiny_model("sd1"), "tiny-stored.safetensors": stored})
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data)]))
    yield built
    built.shutdown()


def generate(services, overrides=None, **fields):
    request = validate_request({"prompt": "a photo of a cat", "checkpoint": "tiny-sd1", "save_images": False,
                                **SMALL, **fields, "option_overrides": overrides or {}}, services.registry)
    job = services.submit_txt2img(request)
    assert job.done.wait(300)
    assert job.state == "done", job.error
    return job.result


def pixels(image):
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE", "DPM++ SDE"])
def test_image_of_a_batch_is_the_image_its_seed_gives_alone(services, sampler):
    batch = generate(services, sampler_name=sampler, seed=40, batch_size=2, subseed=7, subseed_strength=0.2)
    # A1111: with a variation strength every image of the job keeps the seed; the variation seeds count up
    alone = generate(services, sampler_name=sampler, seed=40, subseed=8, subseed_strength=0.2)
    first, second = (image for image in batch.images if image.size == (64, 64))   # (the grid comes first)
    assert "Seed: 40," in second.info["parameters"] and "Variation seed: 8," in second.info["parameters"]
    # the UNet sees a batch of 4 instead of 2: its sums may round differently in the last bit, never more
    difference = np.abs(pixels(second).astype(int) - pixels(alone.images[0]).astype(int))
    assert difference.max() <= 1
    assert not np.array_equal(pixels(first), pixels(second))


def test_sampler_settings_are_recorded_as_a1111_records_them(services):
    plain = generate(services, sampler_name="Euler a", seed=1).infotexts[0]
    assert "RNG:" not in plain and "Eta:" not in plain and "ENSD:" not in plain   # defaults are not written
    assert parse_infotext(plain)["RNG"] == "GPU"   # and read back as A1111's default
    text = generate(services, {"randn_source": "CPU", "eta_noise_seed_delta": 31337, "eta_ancestral": 0.5},
                    sampler_name="Euler a", seed=1).infotexts[0]
    assert "RNG: CPU" in text and "ENSD: 31337" in text and "Eta: 0.5" in text
    euler = generate(services, {"eta_noise_seed_delta": 31337, "s_churn": 0.5}, sampler_name="Euler", seed=1)
    assert "ENSD" not in euler.infotexts[0] and "Sigma churn: 0.5" in euler.infotexts[0]
    assert "Schedule type: Automatic" in euler.infotexts[0]
    karras = generate(services, sampler_name="DPM++ 2M", seed=1).infotexts[0]
    assert "Schedule type: Karras" in karras


def test_noise_sources_and_eta_change_the_picture_and_repeat(services):
    base = pixels(generate(services, sampler_name="Euler a", seed=5).images[0])
    for overrides in ({"randn_source": "NV"}, {"eta_noise_seed_delta": 31337}, {"eta_ancestral": 0.3}):
        first = pixels(generate(services, overrides, sampler_name="Euler a", seed=5).images[0])
        again = pixels(generate(services, overrides, sampler_name="Euler a", seed=5).images[0])
        assert np.array_equal(first, again) and not np.array_equal(first, base), overrides
    # on a machine without CUDA, the GPU source is torch's CPU generator
    cpu = pixels(generate(services, {"randn_source": "CPU"}, sampler_name="Euler a", seed=5).images[0])
    assert np.array_equal(cpu, base)


def test_the_checkpoints_stored_schedule_is_used(services):
    generate(services, checkpoint="tiny-stored", sampler_name="Euler", seed=3)
    model = services.models.current
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    assert torch.equal(model.alphas_cumprod, torch.cumprod(1 - betas, 0).to(torch.float16).float())


def test_eight_bit_images_are_truncated_as_a1111_makes_them():
    decoded = torch.full((1, 3, 2, 2), 2 * (200.9 / 255) - 1)   # 200.9 of 255: A1111 writes 200, not 201
    assert pixels(sampling.to_images(decoded)[0])[0, 0, 0] == 200
