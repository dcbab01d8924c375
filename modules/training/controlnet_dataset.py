"""The condition image of each training image of a ControlNet training, before any step: read from a folder of
condition images named as the images (any image suffix: `cat.png` ↔ `conditions/cat.jpg`), or made from the
image by an annotator (a ControlNet preprocessor). Each becomes a 3×H×W tensor in [0, 1] at the training size,
the layout the ControlNet pipelines feed the hint in (`controlnet.control.hint_tensor`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from modules.controlnet.control import hint_tensor
from modules.training.dataset import IMAGE_SUFFIXES, DatasetEntry, DatasetError
from modules.untrusted import user_images

# (preprocessor name, RGB image, resolution) → the map; `controlnet.preprocessors.Preprocessors.run` is one
Annotate = Callable[[str, Image.Image, int], Image.Image]
# a condition image may be scaled, not stretched: its aspect ratio within this of its image's
ASPECT_TOLERANCE = 0.01


def condition_folder(data_root: str, folder: str) -> Path:
    """The condition folder: a relative one is under the dataset folder."""
    path = Path(folder).expanduser()
    path = path if path.is_absolute() else Path(data_root).expanduser() / path
    if not path.is_dir():
        raise DatasetError(f"The condition folder {path} does not exist or is not a folder")
    return path


def read_conditions(entries: list[DatasetEntry], folder: Path) -> list[torch.Tensor]:
    """Every image's condition image from `folder`; one missing, unreadable or of another shape is a DatasetError
    naming it (a ControlNet cannot learn from an image without its condition)."""
    by_stem = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(path.stem, path)
    conditions = []
    for entry in entries:
        path = by_stem.get(entry.path.stem)
        if path is None:
            raise DatasetError(f"No condition image for {entry.path.name} in {folder} (expected "
                               f"{entry.path.stem} with one of {', '.join(IMAGE_SUFFIXES)})")
        try:
            condition = user_images.load_image_file(path).convert("RGB")
            image_size = user_images.load_image_file(entry.path).size
        except (OSError, ValueError) as error:
            raise DatasetError(f"The condition image {path} cannot be read ({error})") from None
        if abs(condition.width / condition.height - image_size[0] / image_size[1]) > ASPECT_TOLERANCE * (
                image_size[0] / image_size[1]):
            raise DatasetError(f"The condition image {path.name} is {condition.width}x{condition.height}, its "
                               f"image {entry.path.name} {image_size[0]}x{image_size[1]}: their shapes must match")
        conditions.append(_at_size(condition, entry.size))
    return conditions


def annotate_conditions(entries: list[DatasetEntry], annotate: Annotate, module: str) -> list[torch.Tensor]:
    """Every image's condition made by the preprocessor `module` from the image at its training size."""
    conditions = []
    for entry in entries:
        pixels = ((entry.pixels.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        try:
            detected = annotate(module, Image.fromarray(pixels, "RGB"), min(entry.size))
        except Exception as error:  # noqa: BLE001 - a preprocessor's failure (missing weights, ...) names the image
            raise DatasetError(f"The annotator {module} failed on {entry.path.name}: {error}") from None
        conditions.append(_at_size(detected.convert("RGB"), entry.size))
    return conditions


def _at_size(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    if image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.BICUBIC)
    return hint_tensor(image)[0]


def condition_image(condition: torch.Tensor) -> Image.Image:
    """A condition tensor back as the RGB image a ControlNet unit takes (a preview's control image)."""
    pixels = (condition.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")
