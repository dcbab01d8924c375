"""Captions from the interrogator for training data, as A1111 writes them: the img2img tab's batch Interrogate (each
image of a folder → `<stem>.txt` in the output folder, or beside the image; the caption appended on its own line, as
A1111 appends) and the captions of training preparation (A1111's preprocess: BLIP's caption, then DeepBooru's tags,
joined with ", ")."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from modules.jobs import Job, JobError
from modules.postprocess.interrogate.interrogator import MODELS, Interrogator
from modules.training.dataset import CAPTION_SUFFIX, IMAGE_SUFFIXES
from modules.untrusted import user_files, user_images

log = logging.getLogger(__name__)

# Prepare's captioner choices → the interrogator's models, in the order A1111's preprocess joins their texts. "BLIP"
# is Interrogate CLIP (BLIP's caption, with CLIP's matches when a CLIP model and category lists are there), as issue
# 22 asks; A1111's preprocess wrote BLIP's caption alone.
TRAINING_CAPTIONERS = {"BLIP": "clip", "Deepbooru": "deepdanbooru"}


def training_caption(interrogator: Interrogator, image: Image.Image, choices: list[str], settings) -> str:
    """A1111's preprocess caption of one output image: the chosen captioners' texts, BLIP's caption first and then
    DeepBooru's tags, joined with ", " (empty ones left out)."""
    unknown = [choice for choice in choices if choice not in TRAINING_CAPTIONERS]
    if unknown:
        raise JobError(f"caption: unknown captioner {unknown[0]!r}; choose from {', '.join(TRAINING_CAPTIONERS)}")
    parts = [interrogator.interrogate(image, model, settings)
             for choice, model in TRAINING_CAPTIONERS.items() if choice in choices]
    return ", ".join(part for part in parts if part)


@dataclass
class CaptionedFolder:
    written: list[Path] = field(default_factory=list)   # the .txt files written to
    skipped: list[str] = field(default_factory=list)    # "name: reason" for images that could not be read


def caption_folder(interrogator: Interrogator, model: str, source: Path, destination: Path | None, settings,
                   job: Job | None = None) -> CaptionedFolder:
    """A1111's batch Interrogate: every image in `source` captioned by `model`, the caption appended as a line to
    `<stem>.txt` in `destination` (the source folder when None)."""
    if model not in MODELS:
        raise JobError(f"model: must be one of {', '.join(MODELS)}; got {model!r}")
    source = Path(source)
    if not source.is_dir():
        raise JobError(f"source folder {source} does not exist")
    images = sorted(path for path in source.iterdir()
                    if path.suffix.lower() in IMAGE_SUFFIXES and user_files.is_regular(path))
    if not images:
        raise JobError(f"source folder {source} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    destination = Path(destination) if destination else source
    destination.mkdir(parents=True, exist_ok=True)
    result = CaptionedFolder()
    for number, path in enumerate(images):
        if job is not None:
            if job.interrupted:
                break
            job.set_progress(number, len(images))
            job.textinfo = f"Interrogating [{number + 1}/{len(images)}] {path.name}"
        try:
            image = user_images.load_image_file(path)
        except (OSError, ValueError) as error:
            result.skipped.append(f"{path.name}: {error}")
            log.warning("interrogate: %s skipped (%s)", path, error)
            continue
        caption = interrogator.interrogate(image, model, settings)
        target = destination / f"{path.stem}{CAPTION_SUFFIX}"
        if target.exists() and not user_files.is_regular(target):
            raise JobError(f"{target} is not a regular file; not writing a caption through it")
        with open(target, "a", encoding="utf-8") as file:
            file.write(caption + "\n")
        result.written.append(target)
    return result
