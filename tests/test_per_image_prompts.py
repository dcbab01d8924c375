"""Per-image prompts and seeds (issue 21): `p.all_prompts`, `all_negative_prompts`, `all_seeds`, `all_subseeds` that a
script rewrites in `process()` (as A1111's wildcards and dynamic prompts do) decide what each image is generated
from — conditioning per image, batches of different prompts included — and reach each image's infotext. Each image
is the one its prompt and seed give alone (a stand-in extension sets the lists)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from modules.generation.request import validate_request
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.stand_ins import services_with_extensions
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_loras import kohya_lora, write_lora

# A wildcard-like always-on script: the lists it is told to use (by a file beside the extension) replace A1111's.
EXTENSION = '''
import json
from pathlib import Path

from modules import scripts

PLAN = Path(__file__).parents[1] / "plan.json"
SEEN = Path(__file__).parents[1] / "seen.json"


class PerImage(scripts.Script):
    def title(self):
        return "Per image"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        plan = json.loads(PLAN.read_text()) if PLAN.exists() else {}
        for name, values in plan.items():
            setattr(p, name, values)
        SEEN.write_text(json.dumps({"batches": []}))

    def process_batch(self, p, *args, batch_number, prompts, seeds, subseeds):
        seen = json.loads(SEEN.read_text())
        seen["batches"].append({"prompts": prompts, "seeds": seeds, "negative_prompts": p.negative_prompts})
        SEEN.write_text(json.dumps(seen))
'''


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    model = build_tiny_model("sd1")
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("perimage"), {"tiny-sd1.safetensors": model})
    write_lora(kohya_lora(model, seed=3, scale=1.0), data / "models" / "Lora" / "shiny.safetensors")
    with services_with_extensions(data, {"per-image/scripts/per_image.py": EXTENSION}) as services:
        yield services, data / "extensions" / "per-image"


def run(started, plan: dict | None, **fields):
    services, folder = started
    (folder / "plan.json").write_text(json.dumps(plan or {}))
    request = validate_request({"prompt": "a cat", "checkpoint": "tiny-sd1", "width": 64, "height": 64, "steps": 3,
                                "sampler_name": "Euler a", "seed": 5, "save_images": False, "save_grid": False,
                                **fields}, services.registry)
    job = services.submit_txt2img(request)
    assert job.done.wait(300) and job.state == "done", job.error
    seen = json.loads((folder / "seen.json").read_text())
    return job.result, seen


def pixels(image):
    return np.asarray(image.convert("RGB")).astype(int)


def assert_same_picture(one, other):
    # a batch of two rows instead of one may round the UNet's sums differently in the last bit, never more
    assert np.abs(pixels(one) - pixels(other)).max() <= 1


def test_each_image_is_made_from_the_prompt_and_seed_a_script_gave_it(started):
    plan = {"all_prompts": ["a red cat", "a [blue:green:0.5] dog AND a hat :0.6"],
            "all_negative_prompts": ["", "ugly"], "all_seeds": [11, 99]}
    batch, seen = run(started, plan, batch_size=2)
    assert len(batch.images) == 2
    assert "a red cat\nSteps" in batch.infotexts[0] and "Seed: 11," in batch.infotexts[0]
    assert batch.infotexts[1].startswith("a [blue:green:0.5] dog AND a hat :0.6\nNegative prompt: ugly\n")
    assert "Seed: 99," in batch.infotexts[1]
    assert seen["batches"] == [{"prompts": plan["all_prompts"], "seeds": [11, 99], "negative_prompts": ["", "ugly"]}]
    assert batch.info["all_prompts"] == plan["all_prompts"] and batch.info["all_seeds"] == [11, 99]
    assert batch.info["all_negative_prompts"] == ["", "ugly"]
    first, _ = run(started, None, prompt="a red cat", seed=11)
    second, _ = run(started, None, prompt="a [blue:green:0.5] dog AND a hat :0.6", negative_prompt="ugly", seed=99)
    assert_same_picture(batch.images[0], first.images[0])
    assert_same_picture(batch.images[1], second.images[0])
    assert np.abs(pixels(batch.images[0]) - pixels(batch.images[1])).max() > 10


def test_batches_with_other_networks_get_their_own(started):
    """A1111 takes a batch's LoRAs from its first prompt: a wildcard that picks a LoRA for one batch only."""
    plan = {"all_prompts": ["a cat", "a cat <lora:shiny:1>"]}
    made, seen = run(started, plan, n_iter=2)
    assert [batch["prompts"] for batch in seen["batches"]] == [["a cat"], ["a cat <lora:shiny:1>"]]
    assert "Lora hashes" not in made.infotexts[0] and "Lora hashes: \"shiny: " in made.infotexts[1]
    assert "Seed: 5," in made.infotexts[0] and "Seed: 6," in made.infotexts[1]
    plain, _ = run(started, None, seed=6)
    with_lora, _ = run(started, None, prompt="a cat <lora:shiny:1>", seed=6)
    assert_same_picture(made.images[1], with_lora.images[0])
    assert np.abs(pixels(made.images[1]) - pixels(plain.images[0])).max() > 10   # the LoRA was on for it


def test_a_script_that_leaves_the_lists_alone_changes_nothing(started):
    """The lists as A1111 sets them (styles applied, consecutive seeds) give the request's own images."""
    untouched, seen = run(started, None, batch_size=2, seed=20)
    assert seen["batches"][0]["prompts"] == ["a cat", "a cat"] and seen["batches"][0]["seeds"] == [20, 21]
    assert "Seed: 21," in untouched.infotexts[1] and untouched.info["all_prompts"] == ["a cat", "a cat"]


def test_a_prompt_list_gives_each_image_its_prompt():
    """A1111's `p.prompt` may itself be a list (one prompt per image); the styles are applied to each."""
    from modules.processing import StableDiffusionProcessingTxt2Img, _listed, _setup_prompts

    class Styles:
        def apply(self, prompt, negative, names):
            return f"{prompt}, styled", negative

    class Generator:
        networks = type("Networks", (), {"styles": Styles()})()

    p = StableDiffusionProcessingTxt2Img(prompt=["one", "two"], seed=[3, 9], batch_size=2, styles=["s"])
    p._generator = Generator()
    assert _listed(p) == {"all_prompts", "all_negative_prompts", "all_seeds"}
    _setup_prompts(p)
    assert p.all_prompts == ["one, styled", "two, styled"] and p.all_negative_prompts == ["", ""]
    assert p.all_seeds == [3, 9] and p.seed == 3
    p._generator = None
    assert p.to_request().prompt == "one"   # the request's own prompt: the first image's
