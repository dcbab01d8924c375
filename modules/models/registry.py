"""The checkpoints on disk: scanning, hashing (cached) and A1111 titles and aliases.

A name from a user (UI, API, infotext) is only ever matched against the scanned list; it never
becomes a path, so `../../etc/passwd` simply matches nothing.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from modules.untrusted import user_files
from modules.models.hashes import file_sha256
from modules.untrusted.json_file import read_json_object, write_json_atomically

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")


class HashCache:
    """sha256 of files, kept in `cache.json` (A1111's section "hashes") and invalidated by mtime."""

    def __init__(self, path: Path | None):
        self._path = path
        self._lock = threading.Lock()
        self._data: dict = read_json_object(path) if path is not None else {}

    def cached(self, key: str, file: Path) -> str | None:
        entry = self._data.get("hashes", {}).get(key)
        if isinstance(entry, dict) and entry.get("mtime") == file.stat().st_mtime:
            return entry.get("sha256")
        return None

    def store(self, key: str, file: Path, value: str) -> None:
        """Remember a hash computed elsewhere (LoRA "addnet" hashes cover only part of the file)."""
        with self._lock:
            self._data.setdefault("hashes", {})[key] = {"mtime": file.stat().st_mtime, "sha256": value}
            self._save()

    def sha256(self, key: str, file: Path) -> str:
        found = self.cached(key, file)
        if found:
            return found
        value = file_sha256(file)
        self.store(key, file, value)
        return value

    def _save(self) -> None:
        if self._path is not None:
            write_json_atomically(self._path, self._data)


def old_hash(file: Path) -> str:
    """A1111's legacy "old hash": sha256 of 64 KiB at offset 1 MiB, first 8 hex digits."""
    digest = hashlib.sha256()
    with user_files.open_regular(file, "rb") as handle:
        handle.seek(0x100000)
        digest.update(handle.read(0x10000))
    return digest.hexdigest()[:8]


@dataclass
class CheckpointInfo:
    filename: Path          # absolute path
    name: str               # path relative to the checkpoint folder, with extension ("sub/x.safetensors")
    model_name: str         # A1111's model_name: name without extension, folders joined by "_"
    oldhash: str
    sha256: str | None = None
    ids: set[str] = field(default_factory=set)

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name

    @property
    def stem(self) -> str:
        return self.filename.stem

    @property
    def sidecar_yaml(self) -> Path:
        return self.filename.with_suffix(".yaml")

    def refresh_ids(self) -> None:
        """Every string A1111 accepts for this checkpoint (`CheckpointInfo.ids`)."""
        ids = {self.name, self.model_name, self.stem, f"{self.name} [{self.oldhash}]", self.oldhash,
               self.title, str(self.filename)}
        if self.sha256:
            ids |= {self.sha256, self.shorthash, f"{self.name} [{self.shorthash}]",
                    f"{self.stem} [{self.shorthash}]", f"{self.model_name} [{self.shorthash}]"}
        self.ids = ids


class CheckpointRegistry:
    """The scanned list of checkpoints, refreshable without restart."""

    def __init__(self, folder: Path, hashes: HashCache, *, hashing: bool = True):
        self.folder = folder
        self._hashes = hashes
        self._hashing = hashing
        self._lock = threading.Lock()
        self._items: list[CheckpointInfo] = []
        self.refresh()

    def refresh(self) -> list[CheckpointInfo]:
        found = []
        if self.folder.is_dir():
            for root, dirs, files in os.walk(self.folder, followlinks=False):
                dirs.sort()
                for filename in sorted(user_files.regular_names(root, files)):
                    lower = filename.lower()
                    if not lower.endswith(CHECKPOINT_EXTENSIONS) or ".vae." in lower:
                        continue
                    path = Path(root, filename)
                    found.append(self._describe(path))
        found.sort(key=lambda info: info.name.lower())
        with self._lock:
            self._items = found
        return list(found)

    def _describe(self, path: Path) -> CheckpointInfo:
        name = path.relative_to(self.folder).as_posix()
        key = f"checkpoint/{name}"
        info = CheckpointInfo(
            filename=path.resolve(),
            name=name,
            model_name=os.path.splitext(name.replace("/", "_"))[0],
            oldhash=old_hash(path),
            sha256=self._hashes.cached(key, path) if self._hashing else None,
        )
        info.refresh_ids()
        return info

    def items(self) -> list[CheckpointInfo]:
        with self._lock:
            return list(self._items)

    def find(self, query: str | None) -> CheckpointInfo | None:
        """The checkpoint matching a title, name, stem, hash or old hash (A1111's aliases)."""
        if not query or not isinstance(query, str):
            return None
        query = query.strip()
        items = self.items()
        for info in items:
            if query in info.ids:
                return info
        # An A1111 title whose hash part is stale or not yet computed: match on the name part.
        if query.endswith("]") and " [" in query:
            bare = query[: query.rindex(" [")]
            for info in items:
                if bare in (info.name, info.model_name, info.stem):
                    return info
        return None

    def ensure_hash(self, info: CheckpointInfo) -> CheckpointInfo:
        """Compute (or read from cache) the file's sha256, A1111 does this when a model is loaded."""
        if self._hashing and not info.sha256:
            info.sha256 = self._hashes.sha256(f"checkpoint/{info.name}", info.filename)
            info.refresh_ids()
        return info
