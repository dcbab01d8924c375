"""The project's own temporary files, removed at start when a killed process left them behind.

Everything the project writes goes to a hidden temporary name in its final folder and is then renamed into place,
so a reader never sees half a file. A process killed in between (kill -9, power loss) leaves the temporary file,
forever: these are their names, and the folders they can be in. Nothing else is touched.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_IMAGE = re.compile(r"\.[0-9a-f]{16}\.tmp")            # images._write_temp, in output folders
_ATOMIC = re.compile(r"\..+-[a-z0-9_]{8}\.tmp")        # mkstemp(prefix=".<stem>-", suffix=".tmp"): settings, caches,
                                                       # styles, user metadata, the merger's checkpoint and .yaml
_INSTALL = re.compile(r"\.tmp-[a-z0-9_]{8}")           # an extension being cloned: mkdtemp(prefix=".tmp-")


def remove(paths, output_folders: list[Path] = ()) -> list[Path]:
    """Remove leftovers: images being saved (under the outputs and `output_folders`), files being replaced
    (the data folder, next to the settings, and every model folder), extensions being installed."""
    removed: list[Path] = []
    for folder in _outermost([paths.outputs, *output_folders]):
        removed += _files(folder, _IMAGE, recursive=True)
    model_folders = [paths.models, paths.checkpoints, paths.vae, paths.lora, paths.embeddings, paths.hypernetworks,
                     paths.controlnet]
    for folder in _outermost(model_folders):
        removed += _files(folder, _ATOMIC, recursive=True)
    for folder in _distinct([paths.data, paths.config_file.parent, paths.ui_config_file.parent]):
        removed += _files(folder, _ATOMIC, recursive=False)
    if paths.extensions.is_dir():
        for entry in os.scandir(paths.extensions):
            if _INSTALL.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
    if removed:
        log.info("Removed %d temporary file(s) left by an interrupted write, e.g. %s", len(removed), removed[0])
    return removed


def _distinct(folders) -> list[Path]:
    return list(dict.fromkeys(Path(folder).resolve() for folder in folders))


def _outermost(folders) -> list[Path]:
    """The folders to walk recursively: once each, and not those inside another (its walk covers them)."""
    unique = _distinct(folders)
    return [folder for folder in unique
            if not any(other != folder and folder.is_relative_to(other) for other in unique)]


def _files(folder: Path, pattern: re.Pattern, *, recursive: bool) -> list[Path]:
    removed = []
    if not folder.is_dir():
        return removed
    walked = os.walk(folder, followlinks=False) if recursive else [(str(folder), [], os.listdir(folder))]
    for root, _dirs, names in walked:
        for name in names:
            path = Path(root, name)
            if pattern.fullmatch(name) and path.is_file() and not path.is_symlink():
                try:
                    path.unlink()
                    removed.append(path)
                except OSError as error:
                    log.warning("could not remove the leftover %s: %s", path, error)
    return removed
