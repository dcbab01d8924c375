"""Files in the user's folders are read only when they are regular files.

Opening a FIFO waits for a writer that never comes, and a device file (/dev/zero) never ends: one such name in
models/Lora used to hang the listing, then every worker thread that listed it, then the next start. Every scan
of a user folder keeps regular files only (`is_regular`), and every read of a user file opens it without
blocking and checks what it opened (`open_regular`), so a file swapped for a FIFO after the scan is refused too.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class NotARegularFile(OSError):
    """A FIFO, device, socket or folder where a file was expected."""


def is_regular(path: str | Path) -> bool:
    """A regular file (through symlinks), not a FIFO, device, socket or folder."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_regular(path: str | Path, mode: str = "rb", **kwargs):
    """`open(path, mode)` for reading, refusing anything but a regular file without ever blocking on it."""
    if any(flag in mode for flag in "wax+"):
        raise ValueError("open_regular is for reading")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file (a FIFO, device or folder)", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, limit: int = -1) -> bytes:
    with open_regular(path, "rb") as handle:
        return handle.read(limit)


def read_text(path: str | Path, encoding: str = "utf-8", errors: str = "strict", limit: int = -1) -> str:
    with open_regular(path, "r", encoding=encoding, errors=errors) as handle:
        return handle.read(limit)


def regular_names(root: str | Path, names: list[str]) -> list[str]:
    """The names in folder `root` (as os.walk lists them) that are regular files."""
    return [name for name in names if is_regular(os.path.join(root, name))]
