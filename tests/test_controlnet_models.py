"""ControlNet files in models/ControlNet: listed as the extension lists them, their family told, loaded offline."""
from __future__ import annotations

import logging
import os
import re

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import ControlNetModel

from modules.controlnet.models import (
    ControlNetCache,
    ControlNetLoadError,
    ControlNetRegistry,
    controlnet_config,
    detect_family,
    load_controlnet,
    to_diffusers,
)
from modules.models import families
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_malicious_pickle, write_safetensors
from tests.fixtures.tiny_controlnets import (
    build_tiny_controlnet,
    controlnet_to_ldm,
    write_controlnet,
    write_controlnet_folder,
)
from tests.fixtures.tiny_loras import kohya_lora, write_lora

FAMILIES = ("sd1", "sd2", "sdxl")


@pytest.fixture(scope="module")
def controlnets():
    return {family: build_tiny_controlnet(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def tiny_sd1():
    return build_tiny_model("sd1")


def assert_same_weights(model, reference):
    expected = reference.state_dict()
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)


# ---------------------------------------------------------------- layouts and families

@pytest.mark.parametrize("family", FAMILIES)
def test_original_layout_is_the_inverse_of_diffusers_converter(controlnets, family):
    original = {"control_model." + key: value for key, value in controlnet_to_ldm(controlnets[family]).items()}
    assert "control_model.input_hint_block.14.weight" in original and "control_model.zero_convs.0.0.weight" in original
    converted = to_diffusers(original)
    expected = controlnets[family].state_dict()
    assert set(converted) == set(expected)
    assert all(torch.equal(converted[key], expected[key]) for key in expected)


LAYOUTS = {
    "original .safetensors": ("control_v11p_sd15_canny.safetensors", {}),
    "original .pth": ("control_v11p_sd15_canny.pth", {}),
    "original without prefix": ("control_thibaud.pt", {"prefix": ""}),
    "diffusers single file": ("diffusers_xl_canny_full.safetensors", {"layout": "diffusers"}),
    "diffusers single .bin": ("diffusers_canny.bin", {"layout": "diffusers"}),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", [*LAYOUTS, "diffusers folder"])
def test_every_layout_loads_the_same_weights_and_family(tmp_path, controlnets, family, layout):
    if layout == "diffusers folder":
        path = write_controlnet_folder(controlnets[family], tmp_path / "controlnet-canny")
    else:
        name, options = LAYOUTS[layout]
        path = write_controlnet(controlnets[family], tmp_path / name, **options)
    model, detected = load_controlnet(path, torch.float32)
    assert detected.id == family
    assert not model.training and all(p.device.type == "cpu" for p in model.parameters())
    assert_same_weights(model, controlnets[family])
    registry = ControlNetRegistry(tmp_path)
    assert registry.family(registry.items()[0]).id == family   # read from the header / weights alone


@pytest.mark.parametrize("family", FAMILIES)
def test_loaded_controlnet_guides_the_tiny_checkpoint_unet(tmp_path, controlnets, family):
    path = write_controlnet(controlnets[family], tmp_path / "control.safetensors")
    model, _ = load_controlnet(path, torch.float32)
    unet = build_tiny_model(family).unet
    for key in ("block_out_channels", "layers_per_block", "cross_attention_dim", "use_linear_projection",
                "in_channels", "down_block_types", "projection_class_embeddings_input_dim"):
        loaded, expected = model.config[key], unet.config[key]
        assert (list(loaded) == list(expected)) if isinstance(expected, (list, tuple)) else loaded == expected, key
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 5, unet.config.cross_attention_dim, generator=generator)
    hint = torch.rand(1, 3, 64, 64, generator=generator)   # pixel size = latent size × 8, as in a generation
    added = ({"text_embeds": torch.randn(1, 32, generator=generator), "time_ids": torch.rand(1, 6)}
             if family == "sdxl" else None)
    with torch.no_grad():
        down, mid = model(sample, 10, encoder_hidden_states=context, controlnet_cond=hint,
                          added_cond_kwargs=added, return_dict=False)
        guided = unet(sample, 10, context, added_cond_kwargs=added, down_block_additional_residuals=down,
                      mid_block_additional_residual=mid).sample
        plain = unet(sample, 10, context, added_cond_kwargs=added).sample
    assert guided.shape == plain.shape == sample.shape
    assert (guided - plain).abs().max() > 1e-2   # the control changes the prediction


def test_old_file_holding_the_whole_sd_model_uses_only_the_controlnet(tmp_path, controlnets, tiny_sd1):
    combined = dict(tiny_sd1.state_dict)
    combined.update({"control_model." + k: v for k, v in controlnet_to_ldm(controlnets["sd1"]).items()})
    path = tmp_path / "control_sd15_canny.pth"
    torch.save(combined, path)
    model, family = load_controlnet(path, torch.float32)
    assert family is families.SD1
    assert_same_weights(model, controlnets["sd1"])


REAL_CONFIGS = {
    "sd1": dict(cross_attention_dim=768, attention_head_dim=8, use_linear_projection=False),
    "sd2": dict(cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True),
    "sdxl": dict(block_out_channels=[320, 640, 1280], cross_attention_dim=2048, attention_head_dim=[5, 10, 20],
                 use_linear_projection=True, transformer_layers_per_block=[1, 2, 10],
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_real_size_controlnets_are_recognised(family):
    """Full-size shapes (on the meta device: no memory, no download) give the family and the real config."""
    with init_empty_weights():
        real = ControlNetModel(**REAL_CONFIGS[family])
    original = {"control_model." + key: value for key, value in controlnet_to_ldm(real).items()}
    assert detect_family({key: tuple(value.shape) for key, value in original.items()}).id == family
    shapes = {key: tuple(value.shape) for key, value in to_diffusers(original).items()}
    config = controlnet_config(shapes, families.by_id(family))
    for key, value in REAL_CONFIGS[family].items():
        if key != "transformer_layers_per_block":   # read back only where a level has attention
            assert list(config[key]) == list(value) if isinstance(value, list) else config[key] == value, key
    with init_empty_weights():
        rebuilt = ControlNetModel.from_config(config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in real.state_dict().items()}
    assert config["conditioning_embedding_out_channels"] == [16, 32, 96, 256]
    if family == "sd1":
        assert config["block_out_channels"] == [320, 640, 1280, 1280]


def test_family_contradicted_by_a_real_width_is_an_error():
    shapes = {"control_model.input_hint_block.0.weight": (16, 3, 3, 3),
              "control_model.input_blocks.1.1.proj_in.weight": (320, 320),          # linear: SD2-style
              "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}   # SD1 width
    with pytest.raises(ControlNetLoadError, match="768"):
        detect_family(shapes)


def test_shuffle_controlnets_pool_globally(tmp_path, controlnets):
    by_name = write_controlnet(controlnets["sd1"], tmp_path / "control_v11e_sd15_shuffle.safetensors")
    by_yaml = write_controlnet(controlnets["sd1"], tmp_path / "my_pooling_net.safetensors")
    (tmp_path / "my_pooling_net.yaml").write_text(
        "model:\n  params:\n    control_stage_config:\n      params:\n        global_average_pooling: True\n")
    plain = write_controlnet(controlnets["sd1"], tmp_path / "control_v11p_sd15_canny.safetensors")
    assert load_controlnet(by_name, torch.float32)[0].config.global_pool_conditions
    assert load_controlnet(by_yaml, torch.float32)[0].config.global_pool_conditions
    assert not load_controlnet(plain, torch.float32)[0].config.global_pool_conditions


# ---------------------------------------------------------------- the folder

@pytest.fixture
def folder(tmp_path, controlnets):
    write_controlnet(controlnets["sd1"], tmp_path / "control_v11p_sd15_canny.safetensors")
    write_controlnet(controlnets["sd1"], tmp_path / "control_v11p_sd15_canny_anime.pth")
    write_controlnet(controlnets["sd2"], tmp_path / "sd21" / "controlnet_sd21_depth.safetensors")
    write_controlnet(controlnets["sdxl"], tmp_path / "diffusers_xl_canny_full.safetensors", layout="diffusers")
    write_controlnet_folder(controlnets["sdxl"], tmp_path / "controlnet-depth-sdxl")
    (tmp_path / "control_v11p_sd15_canny.yaml").write_text("model: {}\n")   # not a model file
    return tmp_path


def test_titles_are_name_and_old_hash(folder):
    registry = ControlNetRegistry(folder)
    titles = registry.titles()
    assert [re.sub(r" \[[0-9a-f]{8}\]$", "", title) for title in titles] == [
        "control_v11p_sd15_canny", "control_v11p_sd15_canny_anime", "controlnet-depth-sdxl",
        "controlnet_sd21_depth", "diffusers_xl_canny_full"]
    assert all(re.fullmatch(r".+ \[[0-9a-f]{8}\]", title) for title in titles)
    assert [info.title for info in ControlNetRegistry(folder, hashing=False).items()][0] == "control_v11p_sd15_canny"


def test_files_sharing_a_name_are_listed_apart(tmp_path, controlnets):
    """x.pth and x.bin (or x in two sub-folders) used to list twice under one title: a choice meant either."""
    write_controlnet(controlnets["sd1"], tmp_path / "twin.pth")
    write_controlnet(controlnets["sd1"], tmp_path / "twin.bin")
    write_controlnet(controlnets["sd1"], tmp_path / "a" / "same.safetensors")
    write_controlnet(controlnets["sd1"], tmp_path / "b" / "same.safetensors")
    registry = ControlNetRegistry(tmp_path)
    names = sorted(info.name for info in registry.items())
    assert names == ["a/same.safetensors", "b/same.safetensors", "twin.bin", "twin.pth"]
    assert len(set(registry.titles())) == 4
    assert registry.find("twin.pth").path == tmp_path / "twin.pth"
    assert registry.find("b/same.safetensors").path == tmp_path / "b" / "same.safetensors"


def test_find_accepts_what_clients_send(folder):
    registry = ControlNetRegistry(folder)
    canny = registry.items()[0]
    assert canny.name == "control_v11p_sd15_canny"
    for query in (canny.title, canny.name, "control_v11p_sd15_canny [0badf00d]", "control_v11p_sd15_canny.safetensors",
                  "Control_V11p_SD15_Canny", " control_v11p_sd15_canny "):
        assert registry.find(query) == canny, query
    assert registry.find("sd15_canny") == canny        # the extension's fallback: shortest name containing it
    assert registry.find("controlnet-depth-sdxl").path == folder / "controlnet-depth-sdxl"
    for nothing in (None, "", "None", "../../etc/passwd", "openpose"):
        assert registry.find(nothing) is None, nothing


def test_titles_filtered_by_checkpoint_family(folder, tiny_sd1, caplog):
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!}     ")
    write_lora(kohya_lora(tiny_sd1), folder / "some_lora.safetensors")
    registry = ControlNetRegistry(folder)
    names = lambda titles: [title.split(" [")[0] for title in titles]  # noqa: E731
    with caplog.at_level(logging.WARNING):
        assert names(registry.titles(families.SD1)) == ["control_v11p_sd15_canny", "control_v11p_sd15_canny_anime"]
    assert "broken.safetensors" in caplog.text and "some_lora.safetensors" in caplog.text
    assert names(registry.titles(families.SD2)) == ["controlnet_sd21_depth"]
    assert names(registry.titles(families.SDXL)) == ["controlnet-depth-sdxl", "diffusers_xl_canny_full"]
    assert registry.titles(families.SDXL_REFINER) == []
    assert len(registry.titles()) == 7   # the unfiltered list still shows every file


def test_unusable_files_get_a_clear_error_naming_them(tmp_path, tiny_sd1):
    (tmp_path / "corrupt.safetensors").write_bytes(os.urandom(64))
    (tmp_path / "truncated.pth").write_bytes(b"PK\x03\x04 not really a zip")
    write_safetensors(tiny_sd1, tmp_path / "v1-5-pruned.safetensors")
    write_lora(kohya_lora(tiny_sd1), tmp_path / "detail_lora.safetensors")
    (tmp_path / "half-downloaded").mkdir()
    (tmp_path / "half-downloaded" / "config.json").write_text('{"_class_name": "ControlNetModel"}')
    registry = ControlNetRegistry(tmp_path)
    assert len(registry.items()) == 5
    reasons = {"corrupt": "corrupt.safetensors", "truncated": "truncated.pth",
               "v1-5-pruned": "models/Stable-diffusion", "detail_lora": "models/Lora",
               "half-downloaded": "diffusion_pytorch_model.safetensors"}
    for info in registry.items():
        with pytest.raises(ControlNetLoadError) as raised:
            registry.family(info)
        assert info.path.name in str(raised.value) and reasons[info.name] in str(raised.value)
        with pytest.raises(ControlNetLoadError, match=re.escape(info.path.name)):
            load_controlnet(info.path, torch.float32)


def test_malicious_pickle_executes_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = write_malicious_pickle(tmp_path / "control_evil.pth", marker)
    registry = ControlNetRegistry(tmp_path)
    with pytest.raises(ControlNetLoadError, match="control_evil.pth"):
        registry.family(registry.items()[0])
    with pytest.raises(ControlNetLoadError, match="control_evil.pth"):
        ControlNetCache(registry, torch.device("cpu"), torch.float32, lambda: 2).get(registry.items()[0])
    assert registry.titles(families.SD1) == []
    assert not marker.exists()
    assert path.exists()


# ---------------------------------------------------------------- loaded models

def test_cache_keeps_the_most_recently_used(tmp_path, controlnets):
    for name in ("a", "b", "c"):
        write_controlnet(controlnets["sd1"], tmp_path / f"{name}.safetensors")
    registry = ControlNetRegistry(tmp_path)
    a, b, c = registry.items()
    size = [2]
    cache = ControlNetCache(registry, torch.device("cpu"), torch.float16, lambda: size[0])
    first_a = cache.get(a)
    assert next(first_a.parameters()).dtype == torch.float16
    assert cache.get(a) is first_a
    first_b = cache.get(b)
    assert cache.get(a) is first_a            # a used last: b is the oldest now
    cache.get(c)                              # evicts b
    assert cache.get(a) is first_a
    assert cache.get(b) is not first_b
    size[0] = 1                               # a settings change applies at the next get
    latest_c = cache.get(c)
    assert cache.get(c) is latest_c and cache.get(a) is not first_a
    cache.clear()
    assert cache.get(c) is not latest_c


def test_cache_reloads_a_changed_file(tmp_path, controlnets):
    path = write_controlnet(controlnets["sd1"], tmp_path / "control.safetensors")
    registry = ControlNetRegistry(tmp_path)
    cache = ControlNetCache(registry, torch.device("cpu"), torch.float32, lambda: 2)
    info = registry.items()[0]
    before = cache.get(info)
    replacement = build_tiny_controlnet("sd1", seed=5)
    write_controlnet(replacement, path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    after = cache.get(info)
    assert after is not before
    assert_same_weights(after, replacement)
    assert registry.family(info).id == "sd1"

