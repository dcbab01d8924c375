"""A1111's `modules.hashes`: sha256 of model files through the server's hash cache (`cache.json`, invalidated by
the file's mtime), so what an extension hashes is hashed once and shared with the web UI's own lists."""
from __future__ import annotations

from pathlib import Path

from modules.addons.running import services
from modules.models.hashes import file_sha256
from modules.networks.lora.files import addnet_hash


def calculate_sha256(filename) -> str:
    return file_sha256(Path(filename))


def addnet_hash_safetensors(handle) -> str:
    """kohya's hash of a .safetensors file's tensors (after the header), from an open file."""
    return addnet_hash(Path(handle.name))


def sha256_from_cache(filename, title: str, use_addnet_hash: bool = False) -> str | None:
    """The cached hash of `filename` under `title` ("lora/<name>", "checkpoint/<name>", ...), None if there is none
    or the file changed since."""
    path = Path(filename)
    if not path.is_file():
        return None
    return services().hashes.cached(title, path)


def sha256(filename, title: str, use_addnet_hash: bool = False) -> str | None:
    """The hash of `filename`, computed once and cached under `title`; None with --no-hashing, as A1111's."""
    path = Path(filename)
    found = sha256_from_cache(path, title, use_addnet_hash)
    if found is not None:
        return found
    running = services()
    if running.args.no_hashing:
        return None
    value = addnet_hash(path) if use_addnet_hash else file_sha256(path)
    running.hashes.store(title, path, value)
    return value
