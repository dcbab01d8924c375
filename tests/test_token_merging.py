"""Token merging (A1111's token_merging_ratio settings, on tomesd): it changes the image, deterministically, is
written to the infotext, and is gone after the job."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, services as services_module
from modules.generation.request import validate_request
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("tome"), {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start"]))
    yield built
    built.shutdown()


def run(services, **fields):
    data = {"prompt": "a cat", "steps": 3, "width": 128, "height": 128, "seed": 9, "save_images": False, **fields}
    request = validate_request(data, services.registry, services.networks)
    job = (services.submit_img2img if request.init_images else services.submit_txt2img)(request)
    assert job.done.wait(300) and job.state == "done", job.error
    image = job.result.images[0]
    return np.asarray(image, dtype=np.int16), image.info["parameters"]


def test_token_merging_changes_the_image_repeatably_and_is_recorded(services):
    plain, plain_text = run(services)
    merged, text = run(services, option_overrides={"token_merging_ratio": 0.5})
    again, _ = run(services, option_overrides={"token_merging_ratio": 0.5})
    assert np.abs(merged - plain).max() > 0
    assert np.array_equal(merged, again)   # A1111's deterministic merging: same seed, same pixels
    assert "Token merging ratio: 0.5" in text and "Token merging ratio" not in plain_text
    unet = services.models.current.pipeline.unet
    # unpatched after the job: the blocks' own classes and no size hook left
    assert not any(type(module).__name__ == "ToMeBlock" for module in unet.modules())
    assert not unet._forward_pre_hooks
    assert np.array_equal(run(services)[0], plain)


def test_hires_and_img2img_ratios(services):
    _, text = run(services, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5,
                  option_overrides={"token_merging_ratio": 0.3, "token_merging_ratio_hr": 0.6})
    assert "Token merging ratio: 0.3" in text and "Token merging ratio hr: 0.6" in text
    photo = Image.radial_gradient("L").convert("RGB").resize((128, 128))
    _, text = run(services, init_images=[photo], denoising_strength=0.6,
                  option_overrides={"token_merging_ratio": 0.3, "token_merging_ratio_img2img": 0.4})
    assert "Token merging ratio: 0.4" in text and "Token merging ratio hr" not in text
