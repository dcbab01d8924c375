"""Saving a job's images where the settings say, A1111-style, with extensions' image-saved callbacks around it."""
from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from modules import images
from modules.jobs import StorageFull
from modules.script_callbacks import CallbackRegistry, ImageSaveParams

log = logging.getLogger(__name__)


class Saver:
    """Saves for one job: `settings` are the job's (formats, folders, whether to embed infotext)."""

    def __init__(self, data_folder: Path, settings, callbacks: CallbackRegistry, p=None):
        self.data_folder = data_folder
        self.settings = settings
        self.callbacks = callbacks
        self.p = p   # A1111's `p`, given to the callbacks when a script runs the job

    def folder(self, option: str) -> Path:
        return (self.data_folder / (self.settings.get(option) or "")).resolve()

    def save(self, image: Image.Image, option: str, seed: int | None, text: str, *, grid: bool = False) -> Path:
        """One image (or grid) into the folder `option` names; the callbacks may replace the image or its
        infotext. A failed write (disk full, read-only folder) leaves nothing partial and is a clear error."""
        settings = self.settings
        folder = self.folder(option)
        params = ImageSaveParams(image, self.p, str(folder), {"parameters": text})
        self.callbacks.before_image_saved(params)
        embedded = params.pnginfo.get("parameters", "") if settings.enable_pnginfo else None
        try:
            if grid:   # A1111 names grids grid-NNNN, without a seed
                path = images.save_grid(params.image, folder, infotext=embedded, extension=settings.grid_format,
                                        save_to_dirs=settings.grid_save_to_dirs)
            else:
                path = images.save_image(params.image, folder, seed=seed, infotext=embedded,
                                         extension=settings.samples_format, save_to_dirs=settings.save_to_dirs)
        except OSError as error:
            raise StorageFull(f"could not save the image: {error.strerror or error}") from None
        params.filename = str(path)
        self.callbacks.image_saved(params)
        return path


def write_params(path: Path, text: str) -> None:
    """params.txt: the last image's infotext (A1111's "paste last prompt")."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        log.warning("could not write %s: %s", path, error)
