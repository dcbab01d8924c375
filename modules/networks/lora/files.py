"""LoRA files: the list (names, aliases, hashes) and the `<lora:…>` tags of a prompt turned into requests."""
from __future__ import annotations

import logging
import math
import os
import re
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from modules.models import files
from modules.models.files import ModelFileError
from modules.models.hashes import file_sha256
from modules.untrusted import user_files

log = logging.getLogger(__name__)

LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
TAG_KINDS = ("lora", "lyco")


# --------------------------------------------------------------------------- hashing

def addnet_hash(path: Path) -> str:
    """A1111's `addnet_hash_safetensors`: sha256 of everything after the 8-byte length and the JSON header."""
    with user_files.open_regular(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
    return file_sha256(path, offset=8 + length)


class LoraHasher:
    """Computes LoRA hashes once per file version: in memory by (path, mtime, size), and in `cache.json`.

    `hashes` is the project's HashCache (key `lora/<name>`, invalidated by mtime). It is read through
    `HashCache.cached`; it is written through `HashCache.store(key, file, value)` when that method exists.
    """

    def __init__(self, hashes=None):
        self._hashes = hashes
        self._memory: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def sha256(self, info: LoraInfo) -> str:
        stat = info.path.stat()
        memory_key = (str(info.path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            found = self._memory.get(memory_key)
        if found:
            return found
        cache_key = f"lora/{info.name}"
        if self._hashes is not None:
            found = self._hashes.cached(cache_key, info.path)
        if not found:
            found = addnet_hash(info.path) if files.file_kind(info.path) == "safetensors" else file_sha256(info.path)
            if self._hashes is not None:
                self._hashes.store(cache_key, info.path, found)
        with self._lock:
            self._memory[memory_key] = found
        return found


_DEFAULT_HASHER = LoraHasher()


# --------------------------------------------------------------------------- listing

@dataclass
class LoraInfo:
    name: str                       # file stem, what `<lora:name:...>` uses
    alias: str                      # metadata ss_output_name, else the name
    path: Path                      # absolute
    metadata: dict[str, str]        # the safetensors __metadata__ ({} for pickles)
    mentioned_name: str | None = field(default=None, compare=False)   # the name the prompt used
    _hasher: LoraHasher | None = field(default=None, repr=False, compare=False)

    def shorthash(self) -> str:
        """A1111's LoRA short hash: metadata `sshs_model_hash` or the addnet hash, first 12 hex digits."""
        from_metadata = self.metadata.get("sshs_model_hash", "")
        if re.fullmatch(r"[0-9a-fA-F]{12,64}", from_metadata):    # metadata is untrusted text: hex only
            return from_metadata[:12].lower()
        try:
            return (self._hasher or _DEFAULT_HASHER).sha256(self)[:12]
        except (OSError, ModelFileError, struct.error) as error:
            log.warning("LoRA %s: cannot hash %s: %s", self.name, self.path, error)
            return ""


def _natural_key(text: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


class LoraRegistry:
    """The scanned LoRA files; refreshable without restart (`/sdapi/v1/refresh-loras`)."""

    def __init__(self, folder: Path, *extra_folders: Path, hashes=None):
        self.folders = [Path(folder), *(Path(extra) for extra in extra_folders)]
        self._hasher = LoraHasher(hashes)
        self._lock = threading.Lock()
        self._by_name: dict[str, LoraInfo] = {}
        self._by_alias: dict[str, LoraInfo] = {}
        self._forbidden_aliases: set[str] = set()
        self._metadata_cache: dict[tuple, dict[str, str]] = {}
        self.refresh()

    @property
    def folder(self) -> Path:
        return self.folders[0]

    def _files(self) -> Iterator[Path]:
        for folder in self.folders:
            if not folder.is_dir():
                continue
            walked = sorted(os.walk(folder, followlinks=False), key=lambda entry: _natural_key(entry[0]))
            for root, _dirs, names in walked:
                for filename in sorted(user_files.regular_names(root, names), key=_natural_key):
                    if filename.lower().endswith(LORA_EXTENSIONS):
                        yield Path(root, filename)

    def _metadata(self, path: Path, seen: dict[tuple, dict[str, str]]) -> dict[str, str] | None:
        """The file's metadata, read once per file version; None (and a log line) for a file that is not readable."""
        try:
            stat = path.stat()
            key = (str(path), stat.st_mtime_ns, stat.st_size)
            found = self._metadata_cache.get(key)
            if found is None:
                found = files.read_metadata(path)
            seen[key] = found
            return found
        except (ModelFileError, OSError) as error:
            log.warning("Skipping LoRA file %s: %s", path, error)
            return None

    def refresh(self) -> list[LoraInfo]:
        by_name: dict[str, LoraInfo] = {}
        by_alias: dict[str, LoraInfo] = {}
        forbidden: set[str] = set()
        seen: dict[tuple, dict[str, str]] = {}
        for path in self._files():
            metadata = self._metadata(path, seen)
            if metadata is None:
                continue
            name = path.stem
            alias = metadata.get("ss_output_name") or name
            info = LoraInfo(name=name, alias=alias, path=path.resolve(), metadata=metadata, _hasher=self._hasher)
            if name in by_name:
                log.warning("LoRA name %r is used by %s and %s; the latter is used", name, by_name[name].path, path)
            if alias in by_alias and by_alias[alias].path != info.path:
                forbidden.add(alias.lower())
            by_name[name] = info
            by_alias[name] = info
            by_alias[alias] = info
        with self._lock:
            self._by_name, self._by_alias, self._forbidden_aliases = by_name, by_alias, forbidden
            self._metadata_cache = seen
        return list(by_name.values())

    def items(self) -> list[LoraInfo]:
        with self._lock:
            return list(self._by_name.values())

    def find(self, name_or_alias: str | None) -> LoraInfo | None:
        """The LoRA a prompt names: by file stem, or by alias unless two files share that alias."""
        if not name_or_alias or not isinstance(name_or_alias, str):
            return None
        with self._lock:
            if name_or_alias.lower() in self._forbidden_aliases:
                return self._by_name.get(name_or_alias)
            return self._by_alias.get(name_or_alias)


def api_list(registry: LoraRegistry) -> list[dict]:
    """`GET /sdapi/v1/loras`: A1111's shape."""
    return [{"name": info.name, "alias": info.alias, "path": str(info.path), "metadata": info.metadata}
            for info in registry.items()]


# --------------------------------------------------------------------------- prompt tags → requests

def _weight(text, what: str, tag_name: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"LoRA {tag_name}: {what} weight {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"LoRA {tag_name}: {what} weight {text!r} is not a finite number")
    return value


def requests_from_tags(tags: Iterable, registry: LoraRegistry) -> tuple[list[tuple[LoraInfo, float, float]], list[str]]:
    """`<lora:...>` / `<lyco:...>` tags → [(lora, te_weight, unet_weight)] and warnings, with A1111's rules.

    A tag is any object with `kind`, `name`, `positional` (the arguments after the name) and `named`.
    `<lora:n>` → 1, 1; `<lora:n:w>` → w, w; `<lora:n:te:unet>`; `te=` / `unet=` override the positional ones
    (and `unet` defaults to the final `te`, as in A1111's `extra_networks_lora.activate`).
    """
    requests, warnings = [], []
    for tag in tags:
        if getattr(tag, "kind", None) not in TAG_KINDS:
            continue
        name = str(tag.name)
        info = registry.find(name)
        if info is None:
            warnings.append(f"LoRA not found: {name}")
            continue
        positional = list(getattr(tag, "positional", ()) or ())
        named = dict(getattr(tag, "named", {}) or {})
        try:
            te = _weight(positional[0], "text-encoder", name) if positional else 1.0
            te = _weight(named["te"], "text-encoder", name) if "te" in named else te
            unet = _weight(positional[1], "UNet", name) if len(positional) > 1 else te
            unet = _weight(named["unet"], "UNet", name) if "unet" in named else unet
        except ValueError as error:
            warnings.append(str(error))
            continue
        if len(positional) > 2 or "dyn" in named:
            warnings.append(f"LoRA {name}: the dyn (DyLoRA dimension) argument is not supported and was ignored")
        requests.append((replace(info, mentioned_name=name), te, unet))
    return requests, warnings


def one_per_file(requests: list[tuple[LoraInfo, float, float]]) -> list[tuple[LoraInfo, float, float]]:
    """A LoRA named several times is applied once with the sum of its weights: A1111 applies each mention, and a
    LoRA's change is proportional to its weight, so the result is the same, at the cost of one."""
    merged: dict[Path, list] = {}
    for info, te, unet in requests:
        if info.path in merged:
            merged[info.path][1] += te
            merged[info.path][2] += unet
        else:
            merged[info.path] = [info, te, unet]
    return [tuple(entry) for entry in merged.values()]


def infotext_hashes(applied: Iterable[LoraInfo]) -> str:
    """A1111's "Lora hashes" value: 'name: hash12, name2: hash12' (the name as the prompt wrote it)."""
    hashes: dict[str, str] = {}
    for info in applied:
        short = info.shorthash()
        if short:
            name = (info.mentioned_name or info.name).translate(str.maketrans("", "", ":,"))
            hashes[name] = short
    return ", ".join(f"{name}: {short}" for name, short in hashes.items())
