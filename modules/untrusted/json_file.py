"""JSON from users' files and forms, parsed with bounded nesting; the files the app rewrites (config.json,
cache.json) replaced atomically so a crash never leaves half a file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from modules.untrusted import user_files

# No file or form of ours nests deeper than a few levels. Python's parser raises RecursionError (not ValueError)
# at about a thousand, and what it does accept that deep breaks later code that walks it recursively.
MAX_DEPTH = 64


def parse(text: str | bytes, max_depth: int = MAX_DEPTH, **loads_args) -> Any:
    """json.loads that raises ValueError, never RecursionError, for nesting deeper than `max_depth`."""
    try:
        data = json.loads(text, **loads_args)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    _check_depth(data, max_depth)
    return data


def _check_depth(data: Any, max_depth: int) -> None:
    pending = [(data, 1)]   # a walk without recursion
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            raise ValueError(f"JSON nested deeper than {max_depth} levels")
        pending.extend((child, depth + 1) for child in children)


def read_json_object(path: Path) -> dict:
    """The file's JSON object, or {} when it is missing or damaged (start-up must not depend on it)."""
    try:
        data = parse(user_files.read_text(path))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_atomically(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=4, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
