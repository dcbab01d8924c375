"""Dataset preparation (Train → Prepare; A1111's "Preprocess images" of v1.6): a folder of images in, a training
folder out — each image cropped to the training size (centre crop, or around its focal point, or an automatically
chosen size), oversized ones split into overlapping pieces, the original kept as it is, flipped copies, and a caption
beside each output image as `.txt`: BLIP's caption and/or DeepBooru's tags, combined with the image's own `.txt` by
A1111's "Existing caption txt action" (ignore, copy, prepend, append).

As in A1111's preprocess, each chosen operation adds its pieces, in this order: the split pieces of an oversized
image, the focal-point crop, the auto-sized crop (an image no size fits is skipped and named), the original; a centre
crop to the size when none of them applied. Each piece is followed by its flipped copy. Outputs are named
`<n>-<piece>-<stem>.png`, n the image's place in the source folder's sorted listing: preparing again into the same
folder replaces the same names. Every output's caption is made before any file is written, so a captioner whose
weights are missing fails with nothing written, not even the destination folder.

The focal point weighs three kinds of points as A1111's autocrop does: faces (OpenCV's bundled Haar cascade —
A1111 downloads a DNN face model and falls back to the same cascade offline), high-entropy regions, and corners.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from modules.images import replace_atomically
from modules.jobs import Job, JobError
from modules.training.captioning import training_caption
from modules.training.dataset import CAPTION_SUFFIX, IMAGE_SUFFIXES
from modules.untrusted import user_files, user_images

log = logging.getLogger(__name__)

MAX_CAPTION_CHARS = 64 * 1024
UNFIT_FOR_AUTOSIZED_CROP = "can't find suitable size within error threshold"   # A1111's words


class PreprocessRequest(BaseModel):
    """A1111's preprocess fields (its Extras training helpers' settings, with "Scale to" as the size)."""

    model_config = ConfigDict(extra="forbid")

    source_folder: str = Field(min_length=1)
    destination_folder: str = Field(min_length=1)
    width: int = Field(512, ge=64, le=2048, multiple_of=8)
    height: int = Field(512, ge=64, le=2048, multiple_of=8)
    # the .txt beside each image, with the captioners' text: left out, instead of it, before it, or after it
    existing_caption: Literal["ignore", "copy", "prepend", "append"] = "ignore"
    captioners: list[Literal["Deepbooru", "BLIP"]] = Field(default_factory=list)
    keep_original_size: bool = False
    flip: bool = False
    split: bool = False
    split_threshold: float = Field(0.5, ge=0.0, le=1.0)
    overlap_ratio: float = Field(0.2, ge=0.0, le=0.9)
    focal_crop: bool = False
    focal_face_weight: float = Field(0.9, ge=0.0, le=1.0)
    focal_entropy_weight: float = Field(0.15, ge=0.0, le=1.0)
    focal_edges_weight: float = Field(0.5, ge=0.0, le=1.0)
    autosized_crop: bool = False
    min_dimension: int = Field(384, ge=64, le=2048)
    max_dimension: int = Field(768, ge=64, le=2048)
    min_area: int = Field(64 * 64, ge=64 * 64, le=2048 * 2048)
    max_area: int = Field(640 * 640, ge=64 * 64, le=2048 * 2048)
    objective: str = Field("Maximize area", pattern="^(Maximize area|Minimize error)$")
    error_threshold: float = Field(0.1, ge=0.0, le=1.0)


@dataclass
class PreprocessResult:
    written: list[Path]
    skipped: list[str]   # "file: why"


# ---------------------------------------------------------------- the image operations

def center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover width×height, then cut the middle (LANCZOS, as A1111)."""
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def split_oversized(image: Image.Image, width: int, height: int, threshold: float,
                    overlap: float) -> list[Image.Image] | None:
    """A1111's split: an image much longer than the target's aspect (the ratio under `threshold`) is scaled to the
    target's short side and cut along its long side into overlapping target-sized pieces; None when not oversized."""
    tall = image.height > image.width
    ratio = (image.width * height) / (image.height * width) if tall else (image.height * width) / (image.width * height)
    if ratio >= 1.0 or ratio > threshold:
        return None
    if tall:
        long_side = image.height * width // image.width
        scaled, piece = image.resize((width, long_side)), height
    else:
        long_side = image.width * height // image.height
        scaled, piece = image.resize((long_side, height)), width
    count = max(2, math.ceil((long_side - piece * overlap) / (piece * (1.0 - overlap))))
    stride = (long_side - piece) / (count - 1)
    pieces = []
    for index in range(count):
        start = int(stride * index)
        box = (0, start, width, start + piece) if tall else (start, 0, start + piece, height)
        pieces.append(scaled.crop(box))
    return pieces


def autosized_crop(image: Image.Image, request: PreprocessRequest) -> Image.Image | None:
    """A1111's auto-sized crop: among sizes in steps of 64 within the bounds whose aspect error is within the
    threshold, the largest area (or smallest error); None when no size fits."""
    aspect = image.width / image.height

    def error(w: int, h: int) -> float:
        ratio = aspect / (w / h)
        return 1 - (ratio if ratio < 1 else 1 / ratio)

    sizes = [(w, h) for w in range(request.min_dimension, request.max_dimension + 1, 64)
             for h in range(request.min_dimension, request.max_dimension + 1, 64)
             if request.min_area <= w * h <= request.max_area and error(w, h) <= request.error_threshold]
    if not sizes:
        return None
    if request.objective == "Maximize area":
        best = max(sizes, key=lambda wh: (wh[0] * wh[1], -error(*wh)))
    else:
        best = max(sizes, key=lambda wh: (-error(*wh), wh[0] * wh[1]))
    return center_crop(image, *best)


def focal_point(image: Image.Image, face: float, entropy: float, edges: float) -> tuple[float, float]:
    """The weighted centre of faces, busy regions and corners, as (x, y) in the image's pixels."""
    gray = np.asarray(image.convert("L"), dtype=np.uint8)
    points: list[tuple[float, float, float]] = []   # x, y, weight
    for kind, weight, found in (("face", face, _face_points), ("entropy", entropy, _entropy_points),
                                ("edges", edges, _corner_points)):
        if weight <= 0:
            continue
        found_points = found(gray)
        for x, y in found_points:
            points.append((x, y, weight / len(found_points)))
    total = sum(weight for _, _, weight in points)
    if not total:
        return image.width / 2, image.height / 2
    return (sum(x * w for x, _, w in points) / total, sum(y * w for _, y, w in points) / total)


def focal_crop(image: Image.Image, width: int, height: int, request: PreprocessRequest) -> Image.Image:
    """Scale to cover width×height and cut the window centred (as far as it can be) on the focal point."""
    scale = max(width / image.width, height / image.height)
    scaled = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                          Image.Resampling.LANCZOS)
    x, y = focal_point(scaled, request.focal_face_weight, request.focal_entropy_weight, request.focal_edges_weight)
    left = int(min(max(x - width / 2, 0), scaled.width - width))
    top = int(min(max(y - height / 2, 0), scaled.height - height))
    return scaled.crop((left, top, left + width, top + height))


def _face_points(gray: np.ndarray) -> list[tuple[float, float]]:
    import cv2

    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    if cascade.empty():
        return []
    smallest = max(16, min(gray.shape) // 10)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=7, minSize=(smallest, smallest))
    return [(x + w / 2, y + h / 2) for x, y, w, h in faces]


def _entropy_points(gray: np.ndarray, cells: int = 8) -> list[tuple[float, float]]:
    """The centre of the grid cell whose grey levels are the most varied (Shannon entropy)."""
    height, width = gray.shape
    best, where = -1.0, (width / 2, height / 2)
    for row in range(cells):
        for column in range(cells):
            top, bottom = row * height // cells, (row + 1) * height // cells
            left, right = column * width // cells, (column + 1) * width // cells
            cell = gray[top:bottom, left:right]
            if cell.size == 0:
                continue
            counts = np.bincount(cell.ravel(), minlength=256).astype(np.float64)
            probabilities = counts[counts > 0] / cell.size
            value = float(-(probabilities * np.log2(probabilities)).sum())
            if value > best:
                best, where = value, ((left + right) / 2, (top + bottom) / 2)
    return [where]


def _corner_points(gray: np.ndarray) -> list[tuple[float, float]]:
    """Up to 100 corners, at least 6% of the short side apart; the bottom tenth greyed out first, as A1111 does, so
    that a watermark there does not pull the crop."""
    import cv2

    gray = gray.copy()
    gray[int(gray.shape[0] * 0.9):] = 0x99
    corners = cv2.goodFeaturesToTrack(gray, maxCorners=100, qualityLevel=0.04, minDistance=min(gray.shape) * 0.06)
    return [] if corners is None else [(float(x), float(y)) for x, y in corners.reshape(-1, 2)]


# ---------------------------------------------------------------- a folder

def _existing_caption(source: Path, action: str) -> str:
    if action == "ignore":
        return ""
    caption_file = source.with_suffix(CAPTION_SUFFIX)
    if not caption_file.is_file():
        return ""
    return user_files.read_text(caption_file, limit=MAX_CAPTION_CHARS).strip()


def with_existing_caption(generated: str, existing: str, action: str) -> str:
    """A1111's "Existing caption txt action": the image's own caption before (prepend) or after (append) the
    generated one, or instead of it (copy); the generated one alone when there is no existing caption."""
    if existing and action == "prepend":
        generated = f"{existing} {generated}"
    elif existing and action == "append":
        generated = f"{generated} {existing}"
    elif existing and action == "copy":
        generated = existing
    return generated.strip()


def _pieces(image: Image.Image, request: PreprocessRequest) -> tuple[list[Image.Image], str | None]:
    """The image's output pieces (flipped copies not yet added), and why the auto-sized crop skipped it, if it did."""
    width, height = request.width, request.height
    pieces, applied, unfit = [], False, None
    if request.split:
        split = split_oversized(image, width, height, request.split_threshold, request.overlap_ratio)
        if split:
            pieces += split
            applied = True
    # A1111 crops every image that is not square; here every image whose aspect is not the size's (a square one
    # too, for a size that is not), as an image of the size's aspect leaves nothing to choose
    if request.focal_crop and image.width * height != image.height * width:
        pieces.append(focal_crop(image, width, height, request))
        applied = True
    if request.autosized_crop:
        applied = True
        cropped = autosized_crop(image, request)
        if cropped is None:
            unfit = f"skipped {image.width}x{image.height} image ({UNFIT_FOR_AUTOSIZED_CROP})"
        else:
            pieces.append(cropped)
    if request.keep_original_size:
        pieces.append(image)
        applied = True
    if not applied:
        pieces.append(center_crop(image, width, height))
    return pieces, unfit


def _write_png(image: Image.Image, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    replace_atomically(path, buffer.getvalue())


def preprocess(request: PreprocessRequest, job: Job | None = None, interrogator=None,
               settings=None) -> PreprocessResult:
    """Prepare every image of the source folder into the destination folder (created if missing); with
    `request.captioners`, the `interrogator` (and the job's `settings`) caption each output image."""
    if request.captioners and interrogator is None:
        raise JobError("captioners: no interrogator to caption with")
    source = Path(request.source_folder).expanduser()
    destination = Path(request.destination_folder).expanduser()
    if not source.is_dir():
        raise JobError(f"source folder {source} does not exist or is not a folder")
    if source.resolve() == destination.resolve():
        raise JobError("the destination folder must not be the source folder")
    if destination.exists() and not destination.is_dir():
        raise JobError(f"destination folder {destination} is not a folder")
    files = sorted(path for path in source.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not files:
        raise JobError(f"source folder {source} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    written, skipped = [], []
    for number, path in enumerate(files):
        if job is not None:
            if job.interrupted:
                break
            job.set_progress(number, len(files))
            job.textinfo = f"Preprocessing [{number + 1}/{len(files)}] {path.name}"
        try:
            image = user_images.load_image_file(path).convert("RGB")
            existing = _existing_caption(path, request.existing_caption)
        except (OSError, ValueError) as error:
            skipped.append(f"{path.name}: {error}")
            log.warning("preprocess: %s skipped (%s)", path, error)
            continue
        pieces, unfit = _pieces(image, request)
        if unfit:
            skipped.append(f"{path.name}: {unfit}")
            log.warning("preprocess: %s %s", path, unfit)
        outputs = [out for piece in pieces for out in ((piece, ImageOps.mirror(piece)) if request.flip else (piece,))]
        # every caption before this image's files: the first image's captions load the captioners, as A1111 loads
        # them before it starts, so missing weights fail with nothing written
        captions = [with_existing_caption(training_caption(interrogator, out, request.captioners, settings)
                                          if request.captioners else "", existing, request.existing_caption)
                    for out in outputs]
        if outputs:
            destination.mkdir(parents=True, exist_ok=True)
        for index, (out, caption) in enumerate(zip(outputs, captions)):
            target = destination / f"{number:05d}-{index}-{path.stem}.png"
            _write_png(out, target)
            caption_file = target.with_suffix(CAPTION_SUFFIX)
            if caption:
                replace_atomically(caption_file, caption.encode("utf-8"))
            elif user_files.is_regular(caption_file):
                caption_file.unlink()   # an earlier run's caption would otherwise pair with this image
            written.append(target)
    if not written and skipped:
        raise JobError("no image could be prepared: " + "; ".join(skipped[:20]))
    return PreprocessResult(written, skipped)
