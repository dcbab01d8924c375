"""DreamBooth's class images made by the project: when the class folder of a prior-preservation training holds fewer
images than asked (diffusers' train_dreambooth_lora.py, `--with_prior_preservation --num_class_images N`), the
missing ones are generated with the class prompt on the loaded checkpoint before the training starts.

They go through the one generation core (`previews.Generate`, as the training previews do), at the training size,
and are saved in the class folder as `class-<number>.png` with their infotext, never over an existing file. Image
number k gets the seed `training seed + k`, so the same training seed makes the same images.
Interrupting keeps the images made so far and raises `Interrupted`: the training does not start.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from modules.diffusion.noise import MAX_SEED
from modules.images import save_image_with_geninfo
from modules.jobs import InnerJob, Interrupted, Job, JobError, StorageFull
from modules.training.dataset import IMAGE_SUFFIXES
from modules.training.previews import Generate
from modules.untrusted import user_files


def count_images(folder: Path) -> int:
    """The folder's image files (regular files with an image suffix, not its sub-folders); 0 when it is missing."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    except OSError as error:
        raise JobError(f"The class images folder {folder} cannot be read ({error.strerror or error})") from None
    images = [name for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return len(user_files.regular_names(folder, images))


def check_writable(folder: Path) -> None:
    """Create the folder if needed and prove a file can be written in it, before any image is generated."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise JobError(f"The class images folder {folder} cannot be written ({error.strerror or error})") from None


def top_up(folder: str | Path, *, prompt: str, wanted: int, resolution: int, seed: int, generate: Generate,
           job: Job) -> list[Path]:
    """Generate images into `folder` until it holds `wanted`; returns the files written (none when it held enough).
    The job shows "Generating class images i/n" and each image as its live preview."""
    folder = Path(folder).expanduser()
    have = count_images(folder)
    missing = max(0, wanted - have)
    if not missing:
        return []
    check_writable(folder)
    written: list[Path] = []
    def interrupted() -> Interrupted:
        return Interrupted(f"Interrupted while generating class images: {len(written)} of {missing} made in "
                           f"{folder}; the training did not start")

    for done in range(missing):
        if job.interrupted:
            raise interrupted()
        job.textinfo = f"Generating class images {done + 1}/{missing}"
        job.set_progress(done, missing)
        number = have + done
        image_job = InnerJob(job, id=f"{job.id}-class-{number}", kind="training-class-image", run=lambda _job: None)
        try:
            made = generate({"prompt": prompt, "width": resolution, "height": resolution,
                             "seed": _seed_of(seed, number), "save_images": False}, image_job)
        except ValidationError as error:   # found at the first image, before anything is written
            problems = "; ".join(f"{item['loc'][-1]}: {item['msg']}" for item in error.errors())
            raise JobError(f"The class images cannot be generated: {problems}") from None
        if made is None:   # interrupted while it was being made
            raise interrupted()
        image, infotext = made
        path = _free_name(folder, number)
        try:
            save_image_with_geninfo(image, infotext, path)
        except OSError as error:
            raise StorageFull(f"could not write the class image {path}: {error}") from None
        written.append(path)
        job.set_preview(image)
    job.set_progress(missing, missing)
    return written


def _seed_of(seed: int, number: int) -> int:
    return (seed + number) % (MAX_SEED + 1)


def _free_name(folder: Path, number: int) -> Path:
    """`class-<number>.png`, or with a suffix where a file of that name is already there (a user's own)."""
    path, again = folder / f"class-{number:05d}.png", 1
    while path.exists():
        path, again = folder / f"class-{number:05d}-{again}.png", again + 1
    return path
