"""LoRA files: listing, aliases and hashes, prompt-tag semantics, the family a file is made for, and the file
cache (applying them to a pipeline: test_lora_apply.py)."""
from __future__ import annotations

import hashlib
import os
import struct
import tracemalloc
from dataclasses import dataclass, field

import pytest
import torch

from modules.models.registry import HashCache
from modules.networks import lora
from tests.fixtures import tiny_loras
from tests.fixtures.lora_targets import Tiny, write_lora_folder


@dataclass
class Tag:   # the shape of the prompt parser's NetworkTag
    kind: str
    name: str
    positional: tuple = ()
    named: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def sd1():
    return Tiny("sd1")   # only its checkpoint is used here: the pipeline is never built


@pytest.fixture(scope="module")
def sdxl():
    return Tiny("sdxl")


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, sd1, sdxl):
    return write_lora_folder(tmp_path_factory.mktemp("Lora"), sd1.model, sdxl.model)


@pytest.fixture(scope="module")
def registry(lora_dir):
    return lora.LoraRegistry(lora_dir)


# --------------------------------------------------------------------------- listing and hashes

def test_listing_is_recursive_uses_metadata_aliases_and_skips_header_bombs(registry, lora_dir):
    names = [info.name for info in registry.items()]
    assert "aaa_bomb" not in names                       # skipped, and the listing went on after it
    assert {"sd1_style", "sd1_other", "sdxl_style", "sd1_loha"} <= set(names)
    assert "notes" not in names
    style = registry.find("sd1_style")
    assert style.alias == "SD1 Style" and style.path == (lora_dir / "sd1_style.safetensors").resolve()
    assert style.metadata["ss_output_name"] == "SD1 Style"
    assert registry.find("SD1 Style") is style           # by alias too
    assert registry.find("sd1_other").path.parent.name == "deeper"
    assert registry.find("sd1_other").alias == "sd1_other"
    for bad in ("../sd1_style", str(style.path), "sub/deeper/sd1_other", "", None, "sd1_style.safetensors"):
        assert registry.find(bad) is None
    listed = lora.api_list(registry)
    entry = next(item for item in listed if item["name"] == "sd1_style")
    assert entry == {"name": "sd1_style", "alias": "SD1 Style", "path": str(style.path), "metadata": style.metadata}


def test_header_bomb_listing_does_not_allocate(lora_dir):
    tracemalloc.start()
    try:
        registry = lora.LoraRegistry(lora_dir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert registry.find("aaa_bomb") is None and registry.find("sd1_style") is not None
    assert peak < 20 * 1024 * 1024


def test_shorthash_is_a1111_addnet_hash(registry, lora_dir):
    path = lora_dir / "sd1_style.safetensors"
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    expected = hashlib.sha256(data[8 + header_length:]).hexdigest()[:12]
    assert registry.find("sd1_style").shorthash() == expected == tiny_loras.addnet_hash(path)[:12]
    assert expected != hashlib.sha256(data).hexdigest()[:12]     # the header is not hashed


def test_shorthash_prefers_metadata_and_follows_file_changes(tmp_path, sd1):
    folder = tmp_path / "Lora"
    tiny_loras.write_lora(tiny_loras.kohya_lora(sd1.model), folder / "meta.safetensors",
                          metadata={"sshs_model_hash": "0123456789abcdef" * 4})
    tiny_loras.write_lora(tiny_loras.kohya_lora(sd1.model), folder / "plain.safetensors")
    registry = lora.LoraRegistry(folder)
    assert registry.find("meta").shorthash() == "0123456789ab"
    first = registry.find("plain").shorthash()
    tiny_loras.write_lora(tiny_loras.kohya_lora(sd1.model, seed=9), folder / "plain.safetensors")
    os.utime(folder / "plain.safetensors", ns=(1, 1_000_000_000))
    registry.refresh()
    assert registry.find("plain").shorthash() == tiny_loras.addnet_hash(folder / "plain.safetensors")[:12] != first


def test_hashes_go_through_the_hash_cache(tmp_path, sd1):
    class Cache:   # HashCache's interface: cached(key, file), and store(key, file, value) where it has one
        def __init__(self):
            self.data = {}

        def cached(self, key, file):
            entry = self.data.get(key)
            return entry[1] if entry and entry[0] == file.stat().st_mtime else None

        def store(self, key, file, value):
            self.data[key] = (file.stat().st_mtime, value)

    path = tiny_loras.write_lora(tiny_loras.kohya_lora(sd1.model), tmp_path / "Lora" / "x.safetensors")
    cache = Cache()
    short = lora.LoraRegistry(tmp_path / "Lora", hashes=cache).find("x").shorthash()
    assert cache.data["lora/x"][1] == tiny_loras.addnet_hash(path)
    cache.data["lora/x"] = (path.stat().st_mtime, "f" * 64)         # a fresh registry reads the cached value
    assert lora.LoraRegistry(tmp_path / "Lora", hashes=cache).find("x").shorthash() == "f" * 12 != short
    real = HashCache(tmp_path / "cache.json")                        # the project's cache works as well
    assert lora.LoraRegistry(tmp_path / "Lora", hashes=real).find("x").shorthash() == short


def test_same_stem_later_file_wins_and_shared_alias_only_matches_by_name(tmp_path, sd1):
    folder = tmp_path / "Lora"
    sd = tiny_loras.kohya_lora(sd1.model)
    tiny_loras.write_lora(sd, folder / "dup.safetensors", output_name="shared")
    tiny_loras.write_lora(sd, folder / "z" / "dup.safetensors", output_name="dup-z")
    tiny_loras.write_lora(sd, folder / "other.safetensors", output_name="shared")
    registry = lora.LoraRegistry(folder)
    assert registry.find("dup").path.parent.name == "z"          # scanned later (A1111 overwrites)
    assert [info.name for info in registry.items()].count("dup") == 1
    assert registry.find("shared") is None                         # two files call themselves "shared"
    assert registry.find("other").alias == "shared"


def test_infotext_hashes(registry):
    requests, warnings = lora.requests_from_tags([Tag("lora", "SD1 Style", ("0.5",)), Tag("lora", "sd1_other")],
                                                 registry)
    assert warnings == []
    text = lora.infotext_hashes([info for info, _, _ in requests])
    first, second = registry.find("sd1_style").shorthash(), registry.find("sd1_other").shorthash()
    assert text == f"SD1 Style: {first}, sd1_other: {second}"     # the names as the prompt wrote them


# --------------------------------------------------------------------------- tags → requests

def test_requests_from_tags_follow_a1111_weight_rules(registry):
    tags = [Tag("lora", "sd1_style"), Tag("lora", "sd1_style", ("0.8",)), Tag("lora", "sd1_style", ("0.8", "0.3")),
            Tag("lora", "sd1_style", (), {"te": "0.2"}), Tag("lora", "sd1_style", ("0.8",), {"unet": "0.1"}),
            Tag("lyco", "SD1 Style", ("0.4",)), Tag("hypernet", "sd1_style", ("1",)),
            Tag("lora", "missing"), Tag("lora", "sd1_style", ("abc",)), Tag("lora", "sd1_style", ("nan",))]
    requests, warnings = lora.requests_from_tags(tags, registry)
    assert [(info.name, te, unet) for info, te, unet in requests] == [
        ("sd1_style", 1.0, 1.0), ("sd1_style", 0.8, 0.8), ("sd1_style", 0.8, 0.3), ("sd1_style", 0.2, 0.2),
        ("sd1_style", 0.8, 0.1), ("sd1_style", 0.4, 0.4)]
    assert warnings[0] == "LoRA not found: missing"
    assert "'abc' is not a number" in warnings[1] and "'nan'" in warnings[2]


# --------------------------------------------------------------------------- family detection

def test_lora_family_from_layout_and_real_widths(sd1, sdxl):
    assert lora.lora_family(tiny_loras.kohya_lora(sd1.model)).id == "sd1"
    assert lora.lora_family(tiny_loras.kohya_lora(sdxl.model)).id == "sdxl"
    assert lora.lora_family(tiny_loras.kohya_lora(sdxl.model, text_encoder=False)).id == "sdxl"   # depth-2 blocks

    def real(width: int, te: int | None = None):
        key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
        sd = {f"{key}.lora_down.weight": torch.zeros(1, width), f"{key}.lora_up.weight": torch.zeros(640, 1)}
        if te:
            te_key = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
            sd |= {f"{te_key}.lora_down.weight": torch.zeros(1, te), f"{te_key}.lora_up.weight": torch.zeros(te, 1)}
        return sd

    assert lora.lora_family(real(768)).id == "sd1"
    assert lora.lora_family(real(1024)).id == "sd2"
    assert lora.lora_family(real(2048)).id == "sdxl"
    assert lora.lora_family({"something_else": torch.zeros(1)}) is None


# --------------------------------------------------------------------------- the file cache

def test_lora_cache_reuses_and_invalidates(tmp_path, sd1):
    path = tiny_loras.write_lora(tiny_loras.kohya_lora(sd1.model), tmp_path / "a.safetensors")
    other = tiny_loras.write_lora(tiny_loras.kohya_lora(sd1.model, seed=5), tmp_path / "b.safetensors")
    cache = lora.LoraCache(max_items=1)
    first = cache.get(path)
    assert cache.get(path) is first
    cache.get(other)
    assert len(cache) == 1 and cache.get(path) is not first           # evicted, read again
    tiny_loras.write_lora(tiny_loras.kohya_lora(sd1.model, seed=6), path)
    os.utime(path, ns=(1, 2_000_000_000))
    changed_dict = cache.get(path)
    key = next(key for key in changed_dict if key.endswith("lora_down.weight"))
    assert not torch.equal(changed_dict[key], first[key])
