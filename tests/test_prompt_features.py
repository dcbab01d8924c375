"""The A1111 prompt language and extra networks, end to end through the job queue on tiny checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modules import cmd_args, services as services_module
from modules.output.infotext import parse_infotext
from modules.generation.request import validate_request
from modules.prompts import chunks
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_embeddings import random_vectors, write_a1111_pt, write_sdxl_embedding
from tests.fixtures.tiny_hypernetworks import write_hypernetwork
from tests.fixtures.tiny_loras import kohya_lora, write_lora

SMALL = {"width": 64, "height": 64, "steps": 6, "seed": 3, "save_images": False}


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    sd1, sdxl = build_tiny_model("sd1"), build_tiny_model("sdxl")
    data_dir_with_checkpoints(root, {"tiny-sd1.safetensors": sd1, "tiny-sdxl.safetensors": sdxl})
    (root / "embeddings").mkdir()
    write_a1111_pt(root / "embeddings" / "shinyconcept.pt", random_vectors(2, seed=1) * 5)
    write_a1111_pt(root / "embeddings" / "toowide.pt", torch.randn(2, 48))
    write_sdxl_embedding(root / "embeddings" / "xlconcept.safetensors", random_vectors(2, seed=2) * 5,
                         random_vectors(2, seed=3) * 5)
    (root / "models" / "Lora").mkdir(parents=True)
    write_lora(kohya_lora(sd1, seed=5, scale=1.0), root / "models" / "Lora" / "sd1style.safetensors")
    (root / "models" / "VAE").mkdir(parents=True)
    other_vae = {k.removeprefix("first_stage_model."): v for k, v in build_tiny_model("sd1", seed=9).state_dict.items()
                 if k.startswith("first_stage_model.")}
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in other_vae.items()}, str(root / "models" / "VAE" / "other.safetensors"))
    write_hypernetwork(root / "models" / "hypernetworks" / "tinyhyper.pt")
    (root / "styles.csv").write_text('name,prompt,negative_prompt\n'
                                     'cinematic,"cinematic photo of {prompt}, film grain","cartoon"\n',
                                     encoding="utf-8")
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(root)]))
    built.options.update({"sd_checkpoints_limit": 3})
    yield built
    built.shutdown()


def run(services, **fields):
    request = validate_request({"checkpoint": "tiny-sd1", **SMALL, **fields}, services.registry, services.networks)
    job = services.submit_txt2img(request)
    assert job.done.wait(300)
    assert job.state == "done", job.error
    return job.result


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sdxl"])
def test_emphasis_changes_the_image_and_weight_one_does_not(services, checkpoint):
    plain = run(services, checkpoint=checkpoint, prompt="a cat on a mat")
    assert same(plain, run(services, checkpoint=checkpoint, prompt="a (cat:1.0) on a mat"))
    assert not same(plain, run(services, checkpoint=checkpoint, prompt="a (cat:1.6) on a mat"))
    assert not same(plain, run(services, checkpoint=checkpoint, prompt="a [cat] on a mat"))


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sdxl"])
def test_prompt_editing_differs_from_either_prompt_alone(services, checkpoint):
    cat = run(services, checkpoint=checkpoint, prompt="a photo of a cat")
    dog = run(services, checkpoint=checkpoint, prompt="a photo of a dog")
    edited = run(services, checkpoint=checkpoint, prompt="a photo of a [cat:dog:0.5]")
    alternating = run(services, checkpoint=checkpoint, prompt="a photo of a [cat|dog]")
    for result in (edited, alternating):
        assert not same(result, cat) and not same(result, dog)
    assert not same(edited, alternating)
    # the infotext keeps the prompt as written
    assert parse_infotext(edited.infotexts[0])["Prompt"] == "a photo of a [cat:dog:0.5]"


def test_edit_at_the_last_step_is_still_applied(services):
    cat = run(services, prompt="a cat")
    # A1111 counts steps from 0 and uses "from" while step <= when: [cat:dog:4] over 6 steps is dog at step 5 only
    assert not same(cat, run(services, prompt="a [cat:dog:4]"))
    assert same(cat, run(services, prompt="a [cat:dog:5]"))         # never reaches dog in 6 steps


def test_break_comments_and_long_prompts(services):
    plain = run(services, prompt="red cube blue sphere")
    assert not same(plain, run(services, prompt="red cube BREAK blue sphere"))
    assert same(plain, run(services, prompt="red cube blue sphere # a comment\n"))
    long_prompt = ", ".join(f"detail number {i}" for i in range(40))
    assert run(services, prompt=long_prompt).images


def test_emphasis_mode_setting(services):
    original = run(services, prompt="a (cat:1.5) on a (mat:0.5)")
    services.options.update({"emphasis": "No norm"})
    try:
        no_norm = run(services, prompt="a (cat:1.5) on a (mat:0.5)")
    finally:
        services.options.update({"emphasis": "Original"})
    assert not same(original, no_norm)
    assert "Emphasis: No norm" in no_norm.infotexts[0]


def test_token_counter_counts_like_a1111():
    assert chunks.token_count("") == (0, 75)
    assert chunks.token_count("a cat") == (2, 75)
    used, limit = chunks.token_count(", ".join(["word"] * 50))      # 99 tokens
    assert (used > 75, limit) == (True, 150)
    assert chunks.token_count("a cat <lora:x:1> # comment")[0] == 2
    assert chunks.token_count("[a cat:a very very long dog description:0.5]")[0] == 6   # the longer variant


class TestTextualInversion:
    def test_embedding_name_in_prompt_changes_the_image(self, services):
        plain = run(services, prompt="a portrait, style")
        with_embedding = run(services, prompt="a portrait, shinyconcept")
        assert not same(plain, with_embedding)
        hashes = parse_infotext(with_embedding.infotexts[0])["TI hashes"]
        assert hashes.startswith("shinyconcept: ") and len(hashes.split(": ")[1]) == 12

    def test_sdxl_embedding_on_sdxl(self, services):
        plain = run(services, checkpoint="tiny-sdxl", prompt="a portrait")
        assert not same(plain, run(services, checkpoint="tiny-sdxl", prompt="a portrait xlconcept"))

    def test_misfit_embedding_is_skipped_not_crashed(self, services):
        listing = services.networks.embeddings.for_model({"": 32})
        assert "shinyconcept" in listing[0] and "toowide" in listing[1]
        assert run(services, prompt="toowide portrait").images


class TestLora:
    def test_lora_applies_for_the_job_only(self, services):
        baseline = run(services, prompt="a house")
        styled = run(services, prompt="a house <lora:sd1style:1>")
        assert not same(baseline, styled)
        assert same(baseline, run(services, prompt="a house"))       # removed: bit-for-bit the baseline again
        assert parse_infotext(styled.infotexts[0])["Lora hashes"].startswith("sd1style: ")
        assert "<lora:sd1style:1>" in parse_infotext(styled.infotexts[0])["Prompt"]
        assert not same(styled, run(services, prompt="a house <lora:sd1style:0.5>"))
        assert same(baseline, run(services, prompt="a house <lora:sd1style:0>"))

    def test_lora_for_another_family_warns_and_does_nothing(self, services):
        baseline = run(services, checkpoint="tiny-sdxl", prompt="a house")
        result = run(services, checkpoint="tiny-sdxl", prompt="a house <lora:sd1style:1>")
        assert same(baseline, result)
        assert any("sd1style" in warning for warning in result.warnings)
        assert "Lora hashes" not in result.infotexts[0]                  # only LoRAs really applied are listed

    def test_unknown_lora_warns(self, services):
        result = run(services, prompt="a house <lora:nonexistent:1>")
        assert any("nonexistent" in warning for warning in result.warnings)


def test_styles_apply_to_prompt_and_negative(services):
    result = run(services, prompt="a boat", styles=["cinematic"])
    parsed = parse_infotext(result.infotexts[0])
    assert parsed["Prompt"] == "cinematic photo of a boat, film grain"
    assert parsed["Negative prompt"] == "cartoon"
    with pytest.raises(Exception, match="unknown style"):
        validate_request({"prompt": "x", "styles": ["nope"]}, services.registry, services.networks)


def test_vae_selection(services):
    own = run(services, prompt="a tree")
    other = run(services, prompt="a tree", vae="other.safetensors")
    assert not same(own, other)
    parsed = parse_infotext(other.infotexts[0])
    assert parsed["VAE"] == "other" and len(parsed["VAE hash"]) == 10
    assert same(own, run(services, prompt="a tree", vae="None"))
    assert same(own, run(services, prompt="a tree"))                    # the swap was undone
    assert isinstance(Image.open(other.saved[0]) if other.saved else other.images[0], Image.Image)


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sdxl"])
def test_and_combines_weighted_prompts(services, checkpoint):
    cat = run(services, checkpoint=checkpoint, prompt="a photo of a cat")
    dog = run(services, checkpoint=checkpoint, prompt="a photo of a dog")
    both = run(services, checkpoint=checkpoint, prompt="a photo of a cat AND a photo of a dog")
    assert not same(both, cat) and not same(both, dog)
    # a zero-weight part contributes nothing: the same image as the first prompt alone (up to rounding)
    zero = run(services, checkpoint=checkpoint, prompt="a photo of a cat AND a photo of a dog :0")
    assert np.abs(pixels(zero) - pixels(cat)).max() <= 2
    # AND parts follow prompt editing too
    edited = run(services, checkpoint=checkpoint, prompt="a photo of a [cat:dog:0.5] AND a photo of a dog")
    assert not same(edited, both)
    assert "forward" not in vars(services.models.current.pipeline.unet)        # the wrapper is gone


def test_hypernetwork_applies_for_the_job_only(services):
    baseline = run(services, prompt="a castle")
    result = run(services, prompt="a castle <hypernet:tinyhyper:1>")
    assert not same(baseline, result)
    assert same(baseline, run(services, prompt="a castle"))
    assert "<hypernet:tinyhyper:1>" in parse_infotext(result.infotexts[0])["Prompt"]


def test_api_lists_every_kind_of_add_on(services):
    from webui import create_app

    services.args.api = True
    with app_client(create_app(services)) as client:
        loras = client.get("/sdapi/v1/loras").json()
        assert [(item["name"], item["alias"]) for item in loras] == [("sd1style", "sd1style")]
        assert set(loras[0]) == {"name", "alias", "path", "metadata"}
        assert client.post("/sdapi/v1/refresh-loras").status_code == 200
        assert [item["name"] for item in client.get("/sdapi/v1/hypernetworks").json()] == ["tinyhyper"]
        assert client.get("/sdapi/v1/sd-vae").json() == [
            {"model_name": "other.safetensors", "filename": str(services.paths.vae / "other.safetensors")}]
        assert client.get("/sdapi/v1/prompt-styles").json() == [
            {"name": "cinematic", "prompt": "cinematic photo of {prompt}, film grain", "negative_prompt": "cartoon"}]
        embeddings = client.get("/sdapi/v1/embeddings").json()
        assert set(embeddings) == {"loaded", "skipped"} and "shinyconcept" in embeddings["loaded"]
        assert client.post("/sdapi/v1/options", json={"sd_vae": "nope.safetensors"}).status_code == 422
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "styles": ["nope"], **SMALL})
        assert response.status_code == 422 and "styles" in response.text


def test_checkpoint_preferred_vae_from_its_user_metadata(services):
    from modules.networks.cards import write_user_metadata

    checkpoint = services.paths.checkpoints / "tiny-sd1.safetensors"
    write_user_metadata(checkpoint, {"vae": "other.safetensors"})
    try:
        assert parse_infotext(run(services, prompt="a tree").infotexts[0])["VAE"] == "other"
        assert "VAE" not in parse_infotext(run(services, prompt="a tree", vae="None").infotexts[0])
    finally:
        checkpoint.with_suffix(".json").unlink()
