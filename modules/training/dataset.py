"""A training dataset as A1111's PersonalizedBase reads it, up to the VAE: the images of a folder (each resized to the
training size, or its own size with "varsize"), their captions (`<stem>.txt`, or the file name), the alpha channel
used as loss weight; the prompts made from a template (`create_text`), and the order of the batches of an epoch
(A1111's GroupedBatchSampler: each batch of one image size), reproducible from a seed so a resumed training sees the
same data as one never stopped. The trainer encodes the pixels; nothing here needs a model."""
from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modules.untrusted import user_files, user_images
from modules.untrusted.user_regex import UserPattern

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif")
CAPTION_SUFFIX = ".txt"
MAX_CAPTION_CHARS = 64 * 1024
MAX_TEMPLATE_CHARS = 1024 * 1024
_LISTED_SKIPS = 20  # files named in the error when no image could be read

_NUMBERS_AT_START = re.compile(r"^[-\d]+\s*")  # A1111's re_numbers_at_start: "00012-a cat" -> "a cat"


class DatasetError(ValueError):
    """A dataset, image, caption or template that cannot be used; the message names the folder or file."""


@dataclass
class DatasetEntry:
    """One training image before the VAE."""
    path: Path
    filename_text: str                # the caption: `<stem>.txt`, or words of the file name
    pixels: torch.Tensor              # 3 x H x W, float32 in [-1, 1]
    alpha: Image.Image | None         # the image's alpha channel at its original size, when use_weight (loss weight)
    size: tuple[int, int]             # (width, height) of `pixels`


def read_dataset(folder: str | Path | None, *, width: int, height: int, varsize: bool = False,
                 use_weight: bool = False, filename_word_regex: str = "",
                 filename_join_string: str = " ") -> list[DatasetEntry]:
    """Every image of `folder` (not its sub-folders), in the order of their names. An image that cannot be read is
    skipped with a warning (A1111 skips it silently); a dataset with no usable image is a DatasetError listing why
    each file was skipped. `filename_word_regex`/`filename_join_string` are A1111's settings of those names."""
    _check_training_size(width, height)
    root = _dataset_folder(folder)
    words = _word_pattern(filename_word_regex)
    entries: list[DatasetEntry] = []
    skipped: list[str] = []
    for name in sorted(os.listdir(root)):
        path = root / name
        suffix = path.suffix.lower()
        if suffix == CAPTION_SUFFIX:
            continue
        if path.is_dir():
            skipped.append(f"{name}/: a folder (only the images directly in the dataset folder are read)")
            continue
        if suffix not in IMAGE_SUFFIXES:
            skipped.append(f"{name}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
            continue
        try:
            entries.append(_read_entry(path, width, height, varsize, use_weight, words, filename_join_string))
        except DatasetError:
            raise
        except ValueError as exc:  # one bad image among good ones does not stop the training
            logger.warning("Training dataset: skipping %s", exc)
            skipped.append(str(exc))
    if not entries:
        raise DatasetError(_no_image_message(root, skipped))
    return entries


def _check_training_size(width: int, height: int) -> None:
    for label, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 8:
            raise DatasetError(f"The training {label} must be a positive multiple of 8, not {value!r}")


def _dataset_folder(folder: str | Path | None) -> Path:
    if folder is None or not str(folder).strip():
        raise DatasetError("The dataset folder is not given")
    root = Path(folder)
    if not root.exists():
        raise DatasetError(f"The dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"The dataset folder {root} is not a folder")
    try:
        names = os.listdir(root)
    except OSError as exc:
        raise DatasetError(f"The dataset folder {root} cannot be read ({exc.strerror or exc})") from None
    if not names:
        raise DatasetError(f"The dataset folder {root} is empty")
    return root


def _word_pattern(text: str) -> UserPattern | None:
    if not text:
        return None
    try:
        pattern = UserPattern(text, "Filename word regex", per_call=True)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    if pattern.pattern.groups > 1:  # findall would give tuples, which A1111 fails to join
        raise DatasetError(f"Filename word regex {text!r} has {pattern.pattern.groups} groups; use at most one")
    return pattern


def _read_entry(path: Path, width: int, height: int, varsize: bool, use_weight: bool,
                words: UserPattern | None, join_string: str) -> DatasetEntry:
    image = user_images.load_image_file(path)  # bounded size, first frame, upright, RGB or RGBA
    # Only the alpha of an RGBA image (A1111's note: a palette's single transparent colour does not count there;
    # the decoder here has already turned it into RGBA).
    alpha = image.getchannel("A") if use_weight and "A" in image.getbands() else None
    image = image.convert("RGB")
    if varsize:
        # The VAE halves the size three times: a side that is not a multiple of 8 would give latents that do not
        # decode back to the image's size (A1111 keeps the size as it is).
        size = (image.width // 8 * 8, image.height // 8 * 8)
        if 0 in size:
            raise ValueError(f"{path}: {image.width}x{image.height} is smaller than 8 pixels on a side")
    else:
        size = (width, height)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    pixels = (np.asarray(image, dtype=np.uint8) / 127.5 - 1.0).astype(np.float32)  # A1111's arithmetic
    return DatasetEntry(path=path, filename_text=_caption(path, words, join_string),
                        pixels=torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), alpha=alpha, size=size)


def _caption(path: Path, words: UserPattern | None, join_string: str) -> str:
    caption_path = path.with_suffix(CAPTION_SUFFIX)
    if caption_path.exists():
        try:
            text = user_files.read_text(caption_path, encoding="utf-8", limit=MAX_CAPTION_CHARS + 1)
        except UnicodeDecodeError:
            raise ValueError(f"{caption_path}: the caption is not UTF-8 text") from None
        except OSError as exc:
            raise ValueError(f"{caption_path}: cannot read the caption ({exc.strerror or exc})") from None
        if len(text) > MAX_CAPTION_CHARS:
            raise ValueError(f"{caption_path}: the caption is longer than {MAX_CAPTION_CHARS} characters")
        return text.strip()  # an editor's final newline is not part of the caption (A1111 keeps it)
    text = _NUMBERS_AT_START.sub("", path.stem)
    if words is None:
        return text
    try:
        found = words.pattern.findall(text, timeout=words.budget, concurrent=True)
    except TimeoutError:
        raise DatasetError(f"Filename word regex takes too long to match {path.name} (over {words.budget:g} s; "
                           "nested repetitions such as (a+)+ backtrack without end)") from None
    return join_string.join(found)


def _no_image_message(root: Path, skipped: list[str]) -> str:
    if not skipped:
        return f"The dataset folder {root} holds no image, only captions"
    listed = "; ".join(skipped[:_LISTED_SKIPS])
    more = f"; and {len(skipped) - _LISTED_SKIPS} more" if len(skipped) > _LISTED_SKIPS else ""
    return f"No image in the dataset folder {root} could be read: {listed}{more}"


def log_buckets(entries: list[DatasetEntry]) -> None:
    """The sizes the images are trained at, when there are several (A1111's "buckets" line); the trainer logs them
    once they are final (a LoRA's bucketing crops them after reading)."""
    groups = _size_groups(entries)
    if len(groups) > 1:
        logger.info("Training dataset buckets: %s", ", ".join(
            f"{w}x{h}: {len(indices)}" for (w, h), indices in sorted(groups.items())))


def read_template(path: str | Path | None) -> list[str]:
    """The lines of a prompt template file (A1111's textual_inversion_templates), stripped, empty ones left out."""
    if path is None or not str(path).strip():
        raise DatasetError("The prompt template file is not given")
    path = Path(path)
    try:
        text = user_files.read_text(path, encoding="utf-8", limit=MAX_TEMPLATE_CHARS + 1)
    except FileNotFoundError:
        raise DatasetError(f"The prompt template file {path} does not exist") from None
    except UnicodeDecodeError:
        raise DatasetError(f"The prompt template file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise DatasetError(f"The prompt template file {path} cannot be read ({exc.strerror or exc})") from None
    if len(text) > MAX_TEMPLATE_CHARS:
        raise DatasetError(f"The prompt template file {path} is longer than {MAX_TEMPLATE_CHARS} characters")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DatasetError(f"The prompt template file {path} is empty")
    return lines


def create_text(filename_text: str, name: str, template_lines: Sequence[str], rng: random.Random,
                shuffle_tags: bool = False, tag_drop_out: float = 0.0) -> str:
    """A1111's create_text: a random template line, `[filewords]` replaced by the caption's comma-separated tags (each
    dropped with probability `tag_drop_out`, then shuffled when asked) and `[name]` by `name`; every draw from `rng`."""
    text = rng.choice(template_lines)
    tags = filename_text.split(",")
    if tag_drop_out != 0:
        tags = [tag for tag in tags if rng.random() > tag_drop_out]
    if shuffle_tags:
        rng.shuffle(tags)
    text = text.replace("[filewords]", ",".join(tags))
    return text.replace("[name]", name)


def _size_groups(entries: Sequence[DatasetEntry]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for index, entry in enumerate(entries):
        groups.setdefault(tuple(entry.size), []).append(index)
    return groups


def batch_order(entries: Sequence[DatasetEntry], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch, as indices into `entries`: A1111's GroupedBatchSampler made a pure function of its
    arguments. As there: `batch_size` is clipped to the dataset, an epoch is len // batch_size batches of batch_size
    images of one size, each size group gives its full batches (so groups count by their size), and the batches that
    remain go to groups drawn by their share of the images left over, in a shuffled order. A1111 fills those from
    the group at random with replacement; here the images left over go first, topped up from the rest of their group,
    so an epoch uses every image once when each group's size is a multiple of the batch size."""
    if not entries:
        raise DatasetError("The training dataset is empty")
    if batch_size < 1:
        raise DatasetError(f"The batch size must be at least 1, not {batch_size}")
    size = min(batch_size, len(entries))
    rng = random.Random(f"batch_order:{seed}:{epoch}")
    batches: list[list[int]] = []
    with_leftovers: list[list[int]] = []
    for indices in _size_groups(entries).values():
        shuffled = list(indices)
        rng.shuffle(shuffled)
        batches.extend(shuffled[start:start + size] for start in range(0, len(shuffled) - size + 1, size))
        if len(shuffled) % size:
            with_leftovers.append(shuffled)
    # Fewer than the groups with leftovers: the leftovers add up to under size x their number.
    for group in _draw_groups(with_leftovers, len(entries) // size - len(batches), size, rng):
        cut = len(group) // size * size
        batched, leftover = group[:cut], group[cut:]
        needed = size - len(leftover)
        top_up = rng.sample(batched, needed) if len(batched) >= needed else rng.choices(group, k=needed)
        batches.append(leftover + top_up)
    rng.shuffle(batches)
    return batches


def _draw_groups(groups: list[list[int]], count: int, size: int, rng: random.Random) -> list[list[int]]:
    """`count` different groups, each drawn with weight its number of images left over; a group with fewer images
    than a batch only when no other is left (its batch then repeats images, as A1111's draws with replacement do)."""
    pool = list(groups)
    drawn = []
    for _ in range(count):
        candidates = [index for index, group in enumerate(pool) if len(group) >= size] or range(len(pool))
        pick = rng.choices(candidates, weights=[len(pool[index]) % size for index in candidates])[0]
        drawn.append(pool.pop(pick))
    return drawn


def effective_gradient_steps(length: int, batch_size: int, gradient_step: int) -> int:
    """A1111's gradient accumulation steps: no more than the batches an epoch has."""
    if length < 1:
        raise DatasetError("The training dataset is empty")
    if batch_size < 1 or gradient_step < 1:
        raise DatasetError(f"The batch size and gradient accumulation steps must be at least 1, "
                           f"not {batch_size} and {gradient_step}")
    return min(gradient_step, length // min(batch_size, length))
