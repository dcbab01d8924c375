"""sha256 of model files, read in 1 MiB blocks (A1111 `hashes.py`); callers cache the results."""
from __future__ import annotations

import hashlib
from pathlib import Path

from modules.untrusted import user_files


def file_sha256(path: Path, offset: int = 0) -> str:
    """Hex sha256 of the file from `offset` to its end (offset > 0: LoRA "addnet" hashes skip the header)."""
    digest = hashlib.sha256()
    with user_files.open_regular(path, "rb") as handle:
        handle.seek(offset)
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
