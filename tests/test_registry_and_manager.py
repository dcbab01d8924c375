"""The checkpoint list (scan, hashes, aliases) and the model manager (switching, RAM LRU, failed loads)."""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from modules import devices
from modules.cmd_args import parse_args
from modules.models import files
from modules.models.manager import CheckpointLoadError, CheckpointNotFound, ModelManager
from modules.models.registry import CheckpointRegistry, HashCache
from modules.options import Options
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_safetensors


@pytest.fixture(scope="module")
def sd1():
    return build_tiny_model("sd1")


@pytest.fixture
def folder(tmp_path, sd1):
    root = tmp_path / "Stable-diffusion"
    (root / "sub").mkdir(parents=True)
    write_safetensors(sd1, root / "alpha.safetensors")
    write_safetensors(sd1, root / "sub" / "Beta.SAFETENSORS")
    (root / "notes.txt").write_text("not a model")
    (root / "alpha.vae.safetensors").write_bytes((root / "alpha.safetensors").read_bytes())
    return root


def test_scan_is_recursive_and_case_insensitive(folder, tmp_path):
    registry = CheckpointRegistry(folder, HashCache(tmp_path / "cache.json"))
    assert [info.name for info in registry.items()] == ["alpha.safetensors", "sub/Beta.SAFETENSORS"]


def test_titles_hashes_and_aliases(folder, tmp_path):
    cache = tmp_path / "cache.json"
    registry = CheckpointRegistry(folder, HashCache(cache))
    info = registry.find("alpha")
    assert info.title == "alpha.safetensors"            # not hashed yet, as A1111 shows it
    registry.ensure_hash(info)
    sha = hashlib.sha256((folder / "alpha.safetensors").read_bytes()).hexdigest()
    assert info.title == f"alpha.safetensors [{sha[:10]}]"
    for alias in (info.title, "alpha.safetensors", "alpha", sha, sha[:10], f"alpha [{sha[:10]}]", info.oldhash):
        assert registry.find(alias) is info, alias
    assert registry.find("sub_Beta").name == "sub/Beta.SAFETENSORS"
    # the hash is cached in cache.json and read back by a fresh scan
    stored = json.loads(cache.read_text())["hashes"]["checkpoint/alpha.safetensors"]
    assert stored["sha256"] == sha
    assert CheckpointRegistry(folder, HashCache(cache)).find("alpha").title == info.title


def test_hash_cache_invalidated_by_mtime(folder, tmp_path, sd1):
    cache = tmp_path / "cache.json"
    registry = CheckpointRegistry(folder, HashCache(cache))
    first = registry.ensure_hash(registry.find("alpha")).sha256
    path = folder / "alpha.safetensors"
    path.write_bytes(path.read_bytes() + b" ")      # a different file now
    os.utime(path, (1, 1))
    registry = CheckpointRegistry(folder, HashCache(cache))
    info = registry.find("alpha.safetensors")
    assert info.sha256 is None
    assert registry.ensure_hash(info).sha256 != first


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..\\..\\x", "C:\\x", "foo/../../x",
                                  "%2e%2e/", "alpha\x00", "alpha.safetensors::$DATA", ""])
def test_hostile_names_match_nothing(folder, tmp_path, name):
    registry = CheckpointRegistry(folder, HashCache(tmp_path / "cache.json"))
    assert registry.find(name) is None


def test_refresh_picks_up_new_files(folder, tmp_path, sd1):
    registry = CheckpointRegistry(folder, HashCache(tmp_path / "cache.json"))
    write_safetensors(sd1, folder / "gamma.safetensors")
    assert registry.find("gamma") is None
    registry.refresh()
    assert registry.find("gamma") is not None


@pytest.fixture
def manager(folder, tmp_path):
    options = Options(tmp_path / "config.json")
    registry = CheckpointRegistry(folder, HashCache(tmp_path / "cache.json"))
    return ModelManager(registry, devices.from_args(parse_args([])), options)


@pytest.fixture
def count_reads(monkeypatch):
    reads = []
    real = files.load_state_dict

    def counting(path):
        reads.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(files, "load_state_dict", counting)
    return reads


def test_switching_back_uses_the_ram_cache(manager, count_reads):
    first = manager.get("alpha")
    second = manager.get("sub/Beta.SAFETENSORS")
    assert manager.current is second
    again = manager.get(first.info.title)
    assert again is first and manager.current is first
    assert count_reads == ["alpha.safetensors", "Beta.SAFETENSORS"]     # no re-read
    assert manager.options.sd_model_checkpoint == first.info.title       # remembered for the next start


def test_lru_limit_evicts_the_least_recent(manager, folder, sd1, count_reads):
    write_safetensors(sd1, folder / "gamma.safetensors")
    manager.registry.refresh()
    manager.options.update({"sd_checkpoints_limit": 2})
    manager.get("alpha")
    manager.get("Beta")
    manager.get("gamma")
    assert manager.loaded_names() == ["sub/Beta.SAFETENSORS", "gamma.safetensors"]
    manager.get("alpha")
    assert count_reads == ["alpha.safetensors", "Beta.SAFETENSORS", "gamma.safetensors", "alpha.safetensors"]


def test_failed_load_keeps_the_previous_model(manager, folder):
    working = manager.get("alpha")
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    manager.registry.refresh()
    with pytest.raises(CheckpointLoadError, match="broken.safetensors"):
        manager.get("broken")
    assert manager.current is working
    assert manager.get(None) is working


def test_default_skips_a_checkpoint_that_failed(manager, folder):
    (folder / "aaa-broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    manager.registry.refresh()
    with pytest.raises(CheckpointLoadError):
        manager.get(None)                       # first in the list, and broken
    assert manager.get(None).info.name == "alpha.safetensors"


def test_unknown_checkpoint_and_empty_folder(manager, tmp_path):
    with pytest.raises(CheckpointNotFound, match="unknown checkpoint"):
        manager.get("nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    lonely = ModelManager(CheckpointRegistry(empty, HashCache(None)), manager.devices, manager.options)
    with pytest.raises(CheckpointNotFound, match=r"checkpoint folder \(empty\)") as error:
        lonely.get(None)
    assert str(tmp_path) not in str(error.value)   # clients see the folder's name, never the server's path


def test_models_run_in_fp32_on_cpu(manager):
    model = manager.get("alpha")
    assert model.pipeline.unet.dtype == torch.float32
    assert model.pipeline.unet.device.type == "cpu"
