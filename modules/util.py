"""A1111's `modules.util`, for extensions: natural sorting, listing and walking folders, `topological_sort`,
`MassFileLister` (one directory listing answers many "does this file exist" questions), `open_folder`."""
from __future__ import annotations

import logging
import os
import re

from modules.addons import running
from modules.addons.missing_names import missing_name

log = logging.getLogger(__name__)

_DIGITS = re.compile("([0-9]+)")


def natural_sort_key(s: str, regex: re.Pattern = _DIGITS) -> list:
    """"img2" before "img10": digit runs compare as numbers, the rest case-insensitively."""
    return [int(text) if text.isdigit() else text.lower() for text in regex.split(s)]


def listfiles(dirname: str) -> list[str]:
    """The files (not folders, not hidden) directly in `dirname`, in natural order."""
    names = [os.path.join(dirname, name) for name in sorted(os.listdir(dirname), key=natural_sort_key)
             if not name.startswith(".")]
    return [name for name in names if os.path.isfile(name)]


def _setting(key: str, default):
    try:
        return getattr(running.services().options, key, default)
    except RuntimeError:   # before the web UI has started
        return default


def walk_files(path: str, allowed_extensions=None):
    """Every file under `path` (symlinked folders followed), folders and files in natural order; only the given
    extensions (".png", ...) when asked; files in hidden folders only with the setting list_hidden_files."""
    if not os.path.exists(path):
        return
    allowed = {extension.lower() for extension in allowed_extensions} if allowed_extensions is not None else None
    show_hidden = _setting("list_hidden_files", True)
    for root, _, files in sorted(os.walk(path, followlinks=True), key=lambda item: natural_sort_key(item[0])):
        if not show_hidden and ("/." in root or "\\." in root):
            continue
        for filename in sorted(files, key=natural_sort_key):
            if allowed is None or os.path.splitext(filename)[1].lower() in allowed:
                yield os.path.join(root, filename)


def ldm_print(*args, **kwargs) -> None:
    """print, unless the setting hide_ldm_prints is on (A1111's default: it is)."""
    if not _setting("hide_ldm_prints", True):
        print(*args, **kwargs)


def truncate_path(target_path: str, base_path: str | None = None) -> str:
    """`target_path` relative to `base_path` (the working folder) when inside it, else absolute."""
    target, base = os.path.abspath(target_path), os.path.abspath(base_path or os.getcwd())
    try:
        if os.path.commonpath([target, base]) == base:
            return os.path.relpath(target, base)
    except ValueError:   # another drive
        pass
    return target


class MassFileListerCachedDir:
    """One folder's listing: {lower-case name: (name, mtime, ctime)} and the same by exact name."""

    def __init__(self, dirname: str):
        self.dirname = dirname
        with os.scandir(dirname) as entries:
            files = [(entry.name, *_times(entry.stat(follow_symlinks=False))) for entry in entries]
        self.files = {file[0].lower(): file for file in files}
        self.files_cased = {file[0]: file for file in files}

    def update_entry(self, filename: str) -> None:
        try:
            entry = (filename, *_times(os.stat(os.path.join(self.dirname, filename))))
        except FileNotFoundError:
            return
        self.files[filename.lower()] = entry
        self.files_cased[filename] = entry


def _times(stat: os.stat_result) -> tuple[float, float]:
    return stat.st_mtime, stat.st_ctime


class MassFileLister:
    """Answers whether files exist and their times from one listing per folder (A1111's, for card lists)."""

    def __init__(self):
        self.cached_dirs: dict[str, MassFileListerCachedDir] = {}

    def find(self, path: str):
        """(name, mtime, ctime) of the file, or None."""
        dirname, filename = os.path.split(path)
        cached = self.cached_dirs.get(dirname)
        if cached is None:
            try:
                cached = self.cached_dirs[dirname] = MassFileListerCachedDir(dirname)
            except OSError:
                return None
        found = cached.files_cased.get(filename)
        if found is not None or cached.files.get(filename.lower()) is None:
            return found
        try:   # same name in another case: the file system decides whether it is the same file
            return (filename, *_times(os.stat(path, follow_symlinks=False)))
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return self.find(path) is not None

    def mctime(self, path: str) -> tuple[float, float]:
        found = self.find(path)
        return (0, 0) if found is None else found[1:3]

    def reset(self) -> None:
        self.cached_dirs.clear()

    def update_file_entry(self, path: str) -> None:
        dirname, filename = os.path.split(path)
        if cached := self.cached_dirs.get(dirname):
            cached.update_entry(filename)


def topological_sort(dependencies: dict) -> list:
    """Names ordered so each comes after its dependencies; unknown dependencies and circles are ignored (A1111)."""
    visited, result = set(), []

    def visit(name):
        visited.add(name)
        for dependency in dependencies.get(name, []):
            if dependency in dependencies and dependency not in visited:
                visit(dependency)
        result.append(name)

    for name in dependencies:
        if name not in visited:
            visit(name)
    return result


def open_folder(path: str) -> None:
    """Open a folder in the desktop's file browser on the server's machine (as the gallery's 📂 does); refused, as
    that button is, when the server is reachable from the network or --hide-ui-dir-config is given."""
    from modules import cmd_args
    from modules.output import gallery_files

    args = running.services().args
    if cmd_args.is_non_local(args) or args.hide_ui_dir_config:
        log.warning("open_folder(%s) refused: the server is reachable from the network or hides folders", path)
        return
    log.info("%s", gallery_files.open_folder(path))


def __getattr__(name: str):
    raise missing_name("modules.util", name)
