"""Hypernetwork files: the `.pt` files under `models/hypernetworks` listed by stem (A1111 `list_hypernetworks`), and
a prompt's `<hypernet:name:multiplier>` tags turned into requests (A1111 `extra_networks_hypernet.py`).
"""
from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from modules.untrusted import user_files

log = logging.getLogger(__name__)

EXTENSION = ".pt"
TAG_KIND = "hypernet"


# --------------------------------------------------------------------------- listing

@dataclass(frozen=True)
class HypernetworkInfo:
    name: str          # file stem: what `<hypernet:name>` and the API use
    path: Path         # absolute


def _natural_key(text: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


class HypernetworkRegistry:
    """The `.pt` files under `models/hypernetworks` (recursive), by file stem; refreshable without restart.

    As A1111's `list_hypernetworks`: files are not opened to be listed; when two files share a stem the one
    found later (sorted order) wins; a file named `None.pt` is not listed (None is the "no hypernetwork" choice).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._by_name: dict[str, HypernetworkInfo] = {}
        self.refresh()

    def _files(self) -> Iterator[Path]:
        if not self.folder.is_dir():
            return
        walked = sorted(os.walk(self.folder, followlinks=False), key=lambda entry: _natural_key(entry[0]))
        for root, _dirs, names in walked:
            for filename in sorted(user_files.regular_names(root, names), key=_natural_key):
                if filename.lower().endswith(EXTENSION):
                    yield Path(root, filename)

    def refresh(self) -> list[HypernetworkInfo]:
        by_name: dict[str, HypernetworkInfo] = {}
        for path in self._files():
            name = path.stem
            if name == "None":
                continue
            if name in by_name:
                log.warning("Hypernetwork name %r is used by %s and %s; the latter is used", name,
                            by_name[name].path, path)
            by_name[name] = HypernetworkInfo(name=name, path=path.resolve())
        with self._lock:
            self._by_name = by_name
        return list(by_name.values())

    def items(self) -> list[HypernetworkInfo]:
        with self._lock:
            return list(self._by_name.values())

    def find(self, name: str | None) -> HypernetworkInfo | None:
        """The hypernetwork a prompt names, by exact file stem (as A1111); a name never becomes a path."""
        if not name or not isinstance(name, str):
            return None
        with self._lock:
            return self._by_name.get(name)


def api_list(registry: HypernetworkRegistry) -> list[dict]:
    """`GET /sdapi/v1/hypernetworks`: A1111's shape, [{"name", "path"}]."""
    return [{"name": info.name, "path": str(info.path)} for info in registry.items()]


# --------------------------------------------------------------------------- prompt tags → requests

def requests_from_tags(tags: Iterable, registry: HypernetworkRegistry
                       ) -> tuple[list[tuple[HypernetworkInfo, float]], list[str]]:
    """`<hypernet:name[:multiplier]>` tags → [(hypernetwork, multiplier)] and warnings.

    A1111 (`ExtraNetworkHypernet.activate`): the name is `items[0]`, the multiplier `float(items[1])` when there
    is a second item, else 1.0. A tag is any object with `kind` and `name`, and `items` (all `:`-separated parts)
    or `positional` (the parts after the name). Unknown names and multipliers that are not finite numbers are
    warnings and the tag is skipped.
    """
    requests, warnings = [], []
    for tag in tags:
        if getattr(tag, "kind", None) != TAG_KIND:
            continue
        name = str(tag.name)
        items = tuple(getattr(tag, "items", ()) or (name, *(getattr(tag, "positional", ()) or ())))
        info = registry.find(name)
        if info is None:
            warnings.append(f"Hypernetwork not found: {name}")
            continue
        multiplier = 1.0
        if len(items) > 1:
            try:
                multiplier = float(items[1])
            except (TypeError, ValueError):
                multiplier = math.nan
            if not math.isfinite(multiplier):
                warnings.append(f"Hypernetwork {name}: multiplier {items[1]!r} is not a finite number; not applied")
                continue
        requests.append((info, multiplier))
    return requests, warnings
