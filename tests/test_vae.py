"""External VAEs: listing, A1111 resolution rules, safe loading of every file layout, swapping for one job."""
from __future__ import annotations

import hashlib
import os

import pytest
import safetensors.torch
import torch
from diffusers import EulerDiscreteScheduler

from modules.models import detect, families, loader
from modules.models.registry import CheckpointRegistry, HashCache
from modules.networks import vae as vae_module
from modules.networks.vae import (
    VaeCache,
    VaeLoadError,
    VaeRegistry,
    infotext_params,
    load_vae,
    swapped_vae,
)
from tests.fixtures.tiny_checkpoints import (
    build_tiny_model,
    vae_to_ldm,
    write_safetensors,
)

SD1 = detect.ModelSpec(families.SD1, False, "epsilon", "default")
SDXL = detect.ModelSpec(families.SDXL, False, "epsilon", "default")


@pytest.fixture(scope="module")
def base():
    return build_tiny_model("sd1")


@pytest.fixture(scope="module")
def other():
    """A different model: its VAE is the "external" one."""
    return build_tiny_model("sd1", seed=1)


def ldm_vae_keys(model) -> dict:
    """A standalone VAE file as downloaded: LDM keys without the checkpoint prefix."""
    return {k.removeprefix("first_stage_model."): v.clone() for k, v in model.state_dict.items()
            if k.startswith("first_stage_model.")}


@pytest.fixture(scope="module")
def tree(tmp_path_factory, base, other):
    root = tmp_path_factory.mktemp("data")
    vae_dir, ckpt_dir = root / "models" / "VAE", root / "models" / "Stable-diffusion"
    (vae_dir / "sub").mkdir(parents=True)
    ckpt_dir.mkdir(parents=True)
    standalone = ldm_vae_keys(other)
    safetensors.torch.save_file(standalone, str(vae_dir / "standalone.safetensors"))
    safetensors.torch.save_file({"first_stage_model." + k: v for k, v in standalone.items()},
                                str(vae_dir / "prefixed.safetensors"))
    safetensors.torch.save_file({k: v.contiguous() for k, v in other.vae.state_dict().items()},
                                str(vae_dir / "sub" / "diffusers-layout.safetensors"))
    torch.save({"state_dict": standalone, "global_step": 1}, vae_dir / "legacy.pt")   # old .pt VAE
    safetensors.torch.save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 4)},
                                str(vae_dir / "a-lora.safetensors"))
    (vae_dir / "garbage.ckpt").write_bytes(b"this is not a model file at all")
    (vae_dir / "README.md").write_text("# models/VAE\n")
    (vae_dir / "notes.txt").write_text("not listed")
    write_safetensors(base, ckpt_dir / "model.safetensors")
    write_safetensors(base, ckpt_dir / "plain.safetensors")
    safetensors.torch.save_file(standalone, str(ckpt_dir / "model.vae.safetensors"))
    return root, vae_dir, ckpt_dir


@pytest.fixture
def registries(tree):
    root, vae_dir, ckpt_dir = tree
    hashes = HashCache(root / "cache.json")
    return VaeRegistry(vae_dir, ckpt_dir, hashes), CheckpointRegistry(ckpt_dir, hashes, hashing=False), hashes


def same_weights(ours: torch.nn.Module, reference: torch.nn.Module) -> list[str]:
    a, b = ours.state_dict(), reference.state_dict()
    return [k for k in b if k not in a or not torch.equal(a[k], b[k])]


# ------------------------------------------------------------------ listing

def test_listing_models_vae_and_vae_files_beside_checkpoints(registries):
    vaes, checkpoints, _ = registries
    assert vaes.names() == ["a-lora.safetensors", "diffusers-layout.safetensors", "garbage.ckpt", "legacy.pt",
                            "model.vae.safetensors", "prefixed.safetensors", "standalone.safetensors"]
    assert vaes.find("diffusers-layout.safetensors").relative == "sub/diffusers-layout.safetensors"
    # The checkpoint registry skips *.vae.* files, and the VAE registry lists no plain checkpoint.
    assert [info.name for info in checkpoints.items()] == ["model.safetensors", "plain.safetensors"]
    listed = vaes.api_list()
    assert listed[0] == {"model_name": "a-lora.safetensors", "filename": str(vaes.items()[0].path)}
    assert all(set(item) == {"model_name", "filename"} and os.path.isabs(item["filename"]) for item in listed)
    assert vaes.choices()[:3] == ["Automatic", "None", "a-lora.safetensors"]


def test_refresh_and_name_clashes(tmp_path, other):
    vae_dir, ckpt_dir = tmp_path / "VAE", tmp_path / "ckpt"
    (vae_dir / "a").mkdir(parents=True)
    ckpt_dir.mkdir()
    registry = VaeRegistry(vae_dir, ckpt_dir, None)
    assert registry.items() == [] and registry.api_list() == []
    for path in (vae_dir / "x.vae.pt", vae_dir / "a" / "x.vae.pt", ckpt_dir / "x.vae.pt", vae_dir / "v10.pt",
                 vae_dir / "v2.pt"):
        path.write_bytes(b"\x80")
    registry.refresh()
    # The VAE folder's file keeps the bare name; the others stay reachable by relative path; natural sort.
    assert registry.names() == ["a/x.vae.pt", "v2.pt", "v10.pt", "x.vae.pt"]
    assert registry.find("x.vae.pt").path == (vae_dir / "x.vae.pt").resolve()
    # Names never become paths.
    assert registry.find("../ckpt/x.vae.pt") is None
    assert registry.find(str(ckpt_dir / "x.vae.pt")) is None


def test_missing_folders_are_empty(tmp_path):
    assert VaeRegistry(tmp_path / "nope", tmp_path / "nope2", None).items() == []
    assert VaeRegistry(tmp_path / "nope", None, None).items() == []


# ------------------------------------------------------------------ resolve (A1111 resolve_vae)

def test_resolve_automatic_none_name_unknown(registries):
    vaes, checkpoints, _ = registries
    model, plain = checkpoints.find("model.safetensors"), checkpoints.find("plain.safetensors")
    assert vaes.resolve("Automatic", model).name == "model.vae.safetensors"     # found near the checkpoint
    assert vaes.resolve("Automatic", plain) is None                             # the checkpoint's own VAE
    assert vaes.resolve("", plain) is None and vaes.resolve(None, None) is None
    assert vaes.resolve("None", model) is None                                  # "None" beats the near file
    assert vaes.resolve("standalone.safetensors", plain).name == "standalone.safetensors"
    assert vaes.resolve("standalone.safetensors", model).name == "standalone.safetensors"
    assert vaes.resolve("standalone", plain).name == "standalone.safetensors"   # infotext "VAE: standalone"
    with pytest.raises(ValueError) as error:
        vaes.resolve("missing.safetensors", model)
    assert "missing.safetensors" in str(error.value) and "standalone.safetensors" in str(error.value)
    assert "Automatic" in str(error.value)


def test_resolve_user_metadata_preference_and_forced_path(registries, tree):
    vaes, checkpoints, hashes = registries
    model, plain = checkpoints.find("model.safetensors"), checkpoints.find("plain.safetensors")
    assert vaes.resolve("Automatic", plain, preferred="legacy.pt").name == "legacy.pt"
    assert vaes.resolve("Automatic", model, preferred="None") is None
    assert vaes.resolve("Automatic", model, preferred="gone.pt").name == "model.vae.safetensors"
    # The setting wins over the preference by default (sd_vae_overrides_per_model_preferences)...
    assert vaes.resolve("prefixed.safetensors", plain, preferred="legacy.pt").name == "prefixed.safetensors"
    # ...and only then does A1111 fall back from the preference to the near file and the setting.
    assert vaes.resolve("prefixed.safetensors", plain, preferred="legacy.pt",
                        setting_overrides_preferred=False).name == "legacy.pt"
    assert vaes.resolve("prefixed.safetensors", plain,
                        setting_overrides_preferred=False).name == "prefixed.safetensors"
    _, vae_dir, ckpt_dir = tree
    forced = VaeRegistry(vae_dir, ckpt_dir, hashes, forced_path=vae_dir / "legacy.pt")   # --vae-path
    assert forced.resolve("None", plain).name == "legacy.pt"


def test_near_checkpoint_prefers_exact_stem(tmp_path):
    vae_dir, ckpt_dir = tmp_path / "VAE", tmp_path / "ckpt"
    vae_dir.mkdir()
    ckpt_dir.mkdir()
    for name in ("sdxl_vae.safetensors", "sd.safetensors"):
        (vae_dir / name).write_bytes(b"\x80")
    (ckpt_dir / "sd.safetensors").write_bytes(b"\x80")
    (ckpt_dir / "sdx.safetensors").write_bytes(b"\x80")
    vaes, checkpoints = VaeRegistry(vae_dir, ckpt_dir, None), CheckpointRegistry(ckpt_dir, HashCache(None))
    assert vaes.resolve("Automatic", checkpoints.find("sd.safetensors")).name == "sd.safetensors"
    # A1111's looser rule: any VAE whose file name starts with the checkpoint's stem.
    assert vaes.resolve("Automatic", checkpoints.find("sdx.safetensors")).name == "sdxl_vae.safetensors"


# ------------------------------------------------------------------ hashes and infotext

def test_vae_hash_is_sha256_prefix_and_cached(registries):
    vaes, _, hashes = registries
    info = vaes.find("standalone.safetensors")
    expected = hashlib.sha256(info.path.read_bytes()).hexdigest()
    assert info.cached_shorthash() is None or info.cached_shorthash() == expected[:10]
    assert info.shorthash() == expected[:10]
    assert hashes.cached("vae/standalone.safetensors", info.path) == expected
    assert infotext_params(info) == {"VAE hash": expected[:10], "VAE": "standalone"}
    assert list(infotext_params(info)) == ["VAE hash", "VAE"]                  # A1111 key order
    assert infotext_params(info, add_hash=False) == {"VAE": "standalone"}
    assert infotext_params(None) == {}
    assert VaeRegistry(vaes.vae_folder, None, hashes, hashing=False).find("legacy.pt").shorthash() is None


# ------------------------------------------------------------------ loading

@pytest.mark.parametrize("name", ["standalone.safetensors", "prefixed.safetensors", "diffusers-layout.safetensors",
                                  "legacy.pt", "model.vae.safetensors"])
def test_every_layout_loads_bit_identical(registries, other, name):
    vaes, _, _ = registries
    loaded = load_vae(vaes.find(name), SD1, torch.float32)
    assert same_weights(loaded, other.vae) == []
    assert loaded.config.scaling_factor == pytest.approx(0.18215)
    assert loaded.dtype == torch.float32 and not loaded.training


def test_family_constants_and_dtype_come_from_the_spec(registries):
    vaes, _, _ = registries
    loaded = load_vae(vaes.find("standalone.safetensors"), SDXL, torch.float16)
    assert loaded.config.scaling_factor == pytest.approx(0.13025)
    assert loaded.dtype == torch.float16


def test_diffusers_layout_converter_is_the_inverse_of_the_fixture_writer(other):
    sd = other.vae.state_dict()
    expected = vae_to_ldm(sd, other.vae)
    assert set(vae_module.diffusers_vae_to_ldm(sd)) == set(expected)
    # Files saved by diffusers before 0.14 name the attention weights query/key/value/proj_attn.
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for key, value in sd.items():
        for new, old in old_names.items():
            key = key.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        legacy[key] = value
    assert legacy != sd
    converted = vae_module.diffusers_vae_to_ldm(legacy)
    assert set(converted) == set(expected)
    assert all(torch.equal(converted[k].reshape(expected[k].shape), expected[k]) for k in expected)


@pytest.mark.parametrize("name, message", [("a-lora.safetensors", "LoRA"), ("garbage.ckpt", "garbage.ckpt")])
def test_files_that_are_not_vaes_give_clear_errors(registries, name, message):
    vaes, _, _ = registries
    with pytest.raises(VaeLoadError) as error:
        load_vae(vaes.find(name), SD1, torch.float32)
    assert message in str(error.value)


def test_checkpoint_without_vae_and_truncated_vae(tmp_path, base, other):
    unet_only = {k: v for k, v in base.state_dict.items() if k.startswith("model.diffusion_model.")}
    safetensors.torch.save_file(unet_only, str(tmp_path / "unet.safetensors"))
    half = {k: v for k, v in ldm_vae_keys(other).items() if not k.startswith("decoder.")}
    safetensors.torch.save_file(half, str(tmp_path / "half.safetensors"))
    registry = VaeRegistry(tmp_path, None, None)
    with pytest.raises(VaeLoadError, match="checkpoint without a VAE"):
        load_vae(registry.find("unet.safetensors"), SD1, torch.float32)
    with pytest.raises(VaeLoadError, match="half.safetensors"):
        load_vae(registry.find("half.safetensors"), SD1, torch.float32)


def test_pickled_vae_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, ("true",)

    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(VaeLoadError, match="refused"):
        load_vae(VaeRegistry(tmp_path, None, None).find("evil.pt"), SD1, torch.float32)


def test_cache_reuses_and_invalidates(tmp_path, other):
    safetensors.torch.save_file(ldm_vae_keys(other), str(tmp_path / "a.safetensors"))
    safetensors.torch.save_file(ldm_vae_keys(other), str(tmp_path / "b.safetensors"))
    registry = VaeRegistry(tmp_path, None, None)
    a, b = registry.find("a.safetensors"), registry.find("b.safetensors")
    cache = VaeCache(limit=2)
    first = cache.get(a, SD1, torch.float32)
    assert cache.get(a, SD1, torch.float32) is first
    assert cache.get(a, SD1, torch.float16) is not first                       # dtype is part of the key
    assert cache.get(a, SDXL, torch.float32).config.scaling_factor == pytest.approx(0.13025)
    assert len(cache) == 2                                                       # LRU limit
    stat = a.path.stat()
    os.utime(a.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))           # the file changed
    assert cache.get(a, SD1, torch.float32) is not first
    cache.get(b, SD1, torch.float32)
    cache.clear()
    assert len(cache) == 0


# ------------------------------------------------------------------ swapping into a pipeline

@pytest.fixture(scope="module")
def pipeline(base):
    components = loader.build_components(base.state_dict, SD1, torch.float32, torch.float32)
    config = loader.scheduler_config(SD1)
    pipe = loader.build_pipeline(components, SD1, EulerDiscreteScheduler.from_config(config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def decode(pipe, latents):
    with torch.inference_mode():
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(image, output_type="pt")


def test_swapped_vae_decodes_differently_and_is_restored(pipeline, registries, other, base):
    vaes, _, _ = registries
    external = load_vae(vaes.find("standalone.safetensors"), SD1, torch.float32)
    original = pipeline.vae
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    before = decode(pipeline, latents)
    with swapped_vae(pipeline, external) as active:
        assert active is external and pipeline.vae is external
        assert pipeline.components["vae"] is external
        swapped = decode(pipeline, latents)
        with torch.inference_mode():   # the same decode as the reference VAE of the other model
            reference = other.vae.decode(latents / 0.18215).sample
        assert torch.allclose(swapped, pipeline.image_processor.postprocess(reference, output_type="pt"))
    assert pipeline.vae is original
    assert pipeline.config["vae"] == ("diffusers", "AutoencoderKL")
    assert not torch.allclose(before, swapped, atol=1e-3)
    assert torch.equal(decode(pipeline, latents), before)
    assert same_weights(pipeline.vae, base.vae) == []


def test_pipeline_call_uses_the_swapped_vae(pipeline, registries):
    vaes, _, _ = registries
    external = load_vae(vaes.find("legacy.pt"), SD1, torch.float32)

    def run():
        embeds = torch.zeros(1, 77, 32)
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        return pipeline(prompt_embeds=embeds, negative_prompt_embeds=embeds, latents=latents, height=64, width=64,
                        num_inference_steps=1, guidance_scale=1.0, output_type="np").images

    own = run()
    with swapped_vae(pipeline, external):
        theirs = run()
    assert own.shape == theirs.shape == (1, 64, 64, 3)
    assert not (own == theirs).all()
    assert (run() == own).all()


def test_swap_restores_after_errors_and_refuses_misfits(pipeline, registries):
    vaes, _, _ = registries
    original = pipeline.vae
    external = load_vae(vaes.find("standalone.safetensors"), SD1, torch.float32)
    with pytest.raises(RuntimeError), swapped_vae(pipeline, external):
        raise RuntimeError("job failed")
    assert pipeline.vae is original
    with swapped_vae(pipeline, None) as active:                                  # None: the model's own VAE
        assert active is original
    from diffusers import AutoencoderKL

    misfit = AutoencoderKL(block_out_channels=(32, 32), latent_channels=4, norm_num_groups=32,
                           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    with pytest.raises(VaeLoadError, match="does not fit"), swapped_vae(pipeline, misfit):
        pass
    assert pipeline.vae is original


def test_backend_module_imports_no_web_framework():
    import subprocess
    import sys

    code = ("import sys, modules.networks.vae, modules.prompts.styles; "
            "bad = [m for m in ('gradio', 'fastapi', 'diffusers') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"
