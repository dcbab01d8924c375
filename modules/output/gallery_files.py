"""What the buttons under a generation gallery do with its images (A1111's `ui_common.save_files` and
`util.open_folder`): 💾 saves the picked image (or all of them) to the Save folder (`outdir_save`, A1111's
`log/images`) with a line in its `log.csv`, 🗃️ does the same and packs the saved files in a zip beside them,
📂 opens an output folder in the desktop's file browser.

Nothing is half-written: each image, the zip and the rewritten `log.csv` appear under their names at once
(a temporary file in the same folder, fsynced, then renamed), as `modules.images` saves images.
"""
from __future__ import annotations

import csv
import io
import os
import platform
import re
import subprocess
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from modules import images
from modules.output import infotext as infotext_module

# A1111's log.csv columns, in its order.
CSV_FIELDS = ["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename", "negative_prompt",
              "sd_model_name", "sd_model_hash"]
CSV_NAME = "log.csv"
_csv_lock = threading.Lock()   # two saves at once must not lose each other's line
_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*\[\]]')


class SaveError(Exception):
    """Nothing to save, or the disk refused; the message says which."""


@dataclass
class SavedImages:
    folder: Path
    files: list[Path] = field(default_factory=list)    # every file written: images, infotext .txt files
    names: list[str] = field(default_factory=list)     # the same, relative to `folder` (as log.csv names them)
    archive: Path | None = None                        # the zip, when one was asked for

    @property
    def downloads(self) -> list[Path]:
        """What the page offers to download: the zip first (A1111's order), then the files."""
        return ([self.archive] if self.archive else []) + self.files


def chosen_indexes(count: int, selected: int | None, index_of_first_image: int, selected_only: bool) -> list[int]:
    """Which gallery images a save takes: the picked one when `save_selected_only` and a picture (not the grid)
    is picked, else all of them (A1111's rule)."""
    if selected_only and selected is not None and index_of_first_image <= selected < count:
        return [selected]
    return list(range(count))


def save_images(pictures: Sequence[Image.Image | str | Path], generation: dict, settings, folder: Path, *,
                selected: int | None = None, make_zip: bool = False) -> SavedImages:
    """Save the gallery's `pictures` (images or their files) with their infotexts from `generation` (the
    tab's last result: `infotexts`, `index_of_first_image`, and `info` with A1111's width, height,
    sampler_name, cfg_scale, steps, sd_model_name, sd_model_hash) into `folder`; `settings` are the options
    (save_selected_only, save_write_log_csv, use_save_to_dirs_for_ui, samples_format, enable_pnginfo)."""
    generation = generation or {}
    if not pictures:
        raise SaveError("There is no image to save: generate one first.")
    infotexts = list(generation.get("infotexts") or [])
    first = int(generation.get("index_of_first_image") or 0)
    chosen = chosen_indexes(len(pictures), selected, first, bool(settings.get("save_selected_only", True)))
    saved = SavedImages(folder=folder)
    parsed: list[dict] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for index in chosen:
            text = infotexts[index] if index < len(infotexts) else ""   # ControlNet maps have none
            values = infotext_module.parse_infotext(text) if text else {}
            parsed.append(values)
            picture = pictures[index]
            image = picture if isinstance(picture, Image.Image) else images.load_image_file(picture)
            embedded = text if (text and settings.get("enable_pnginfo", True)) else None
            seed = _seed(values)
            if seed is None:   # a ControlNet map: named after its job's first seed
                seed = next(iter(generation.get("seeds") or []), None)
            extension = settings.get("samples_format", "png")
            to_dirs = bool(settings.get("use_save_to_dirs_for_ui", False))
            if seed is None:
                path = images.save_numbered(image, folder / (time.strftime("%Y-%m-%d") if to_dirs else ""),
                                            infotext=embedded, extension=extension)
            else:
                path = images.save_image(image, folder, seed=seed, infotext=embedded, extension=extension,
                                         save_to_dirs=to_dirs)
            saved.files.append(path)
            saved.names.append(path.relative_to(folder).as_posix())
            beside = path.with_suffix(".txt")   # a JPEG's infotext too long for EXIF
            if embedded and beside.is_file() and path.suffix != ".txt":
                saved.files.append(beside)
                saved.names.append(beside.relative_to(folder).as_posix())
        if settings.get("save_write_log_csv", True):
            append_log(folder / CSV_NAME, csv_row(parsed[0], generation.get("info") or {}, saved.names[0]))
        if make_zip:
            saved.archive = write_zip(folder, zip_name(parsed, generation.get("info") or {}), saved)
    except OSError as error:
        raise SaveError(f"Could not save to {folder}: {error.strerror or error}") from None
    return saved


def _seed(values: dict) -> int | None:
    try:
        return int(values.get("Seed"))
    except (TypeError, ValueError):
        return None


def csv_row(values: dict, info: dict, filename: str) -> list:
    """One log.csv line: the first saved image's prompt and seed, the job's size and settings, its file name."""
    return [values.get("Prompt", ""), values.get("Seed", ""), info.get("width", ""), info.get("height", ""),
            info.get("sampler_name", ""), info.get("cfg_scale", ""), info.get("steps", ""), filename,
            values.get("Negative prompt", ""), info.get("sd_model_name", ""), info.get("sd_model_hash", "")]


def append_log(path: Path, row: list) -> None:
    """Add `row` to log.csv, written whole to a temporary file and renamed over it. An older file with fewer
    columns gets A1111's header and its rows padded (A1111's `update_logfile`)."""
    with _csv_lock:
        rows: list[list[str]] = []
        if path.is_file():
            with open(path, encoding="utf-8", newline="") as file:
                rows = list(csv.reader(file))
        if rows and len(rows[0]) != len(CSV_FIELDS):
            rows[0] = list(CSV_FIELDS)
            rows[1:] = [row_ + [""] * (len(CSV_FIELDS) - len(row_)) for row_ in rows[1:]]
        if not rows:
            rows = [list(CSV_FIELDS)]
        rows.append([str(value) if value is not None else "" for value in row])
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        images.replace_atomically(path, out.getvalue().encode("utf-8"))


def zip_name(parsed: list[dict], info: dict) -> str:
    """A1111's default archive name, `[datetime]_[[model_name]]_[seed]-[seed_last]`."""
    seeds = [str(_seed(values)) for values in parsed if _seed(values) is not None] or ["0"]
    model = _UNSAFE.sub("_", str(info.get("sd_model_name") or ""))[:80]
    return f"{time.strftime('%Y%m%d%H%M%S')}_[{model}]_{seeds[0]}-{seeds[-1]}"


def write_zip(folder: Path, name: str, saved: SavedImages) -> Path:
    """The saved files in a zip under their names relative to `folder`; never replaces another zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, member in zip(saved.files, saved.names):
            archive.write(path, member)
    return images.write_new(folder, buffer.getvalue(), _ZipNames(name))


class _ZipNames:
    """`name.zip`, then `name-1.zip`, … (for images.write_new)."""

    def __init__(self, name: str):
        self.name = name

    def start(self, folder: Path) -> int:
        return 0

    def __call__(self, number: int) -> str:
        return f"{self.name}.zip" if number == 0 else f"{self.name}-{number}.zip"


# ------------------------------------------------------------------ 📂

def file_browser(path: Path) -> None:
    """Open `path` in the desktop's file browser (A1111's `util.open_folder`)."""
    system = platform.system()
    if system == "Windows":
        os.startfile(str(path))   # type: ignore[attr-defined]  # noqa: S606 - a folder of ours, no shell
    elif system == "Darwin":
        subprocess.Popen(["open", str(path)])   # noqa: S603, S607
    else:
        subprocess.Popen(["xdg-open", str(path)])   # noqa: S603, S607


def open_folder(path: Path, launch: Callable[[Path], None] | None = None) -> str:
    """Open an output folder; the message says what happened. `launch` (default `file_browser`, looked up at
    each call so tests can replace it) does the opening."""
    path = Path(path)
    if not path.exists():
        return f'Folder "{path}" does not exist yet: it is made when the first image is saved there.'
    if not path.is_dir():
        return f'"{path}" is not a folder.'
    try:
        (launch or file_browser)(path.resolve())
    except OSError as error:
        return f"Could not open {path}: {error.strerror or error}"
    return f"Opened {path}."
