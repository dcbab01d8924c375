"""Preview images while training (A1111's "Save an image to log directory every N steps"): a txt2img generation
on the model being trained, with what has been learnt so far, saved as `<log>/images/<name>-<step>.png` with its
infotext and shown as the job's live preview.

A1111's prompt: the current batch's first training prompt, at 20 steps and the training size; with "Read
parameters from txt2img tab" the preview_* fields instead. The generation runs inside the training job (the
worker owns the model), through the one generation core, as a job of its own that nobody queues.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from modules.images import save_image_with_geninfo
from modules.jobs import InnerJob, Job
from modules.training.common import TrainingResult

PREVIEW_STEPS = 20   # A1111's, when the preview does not follow the txt2img tab


@dataclass
class PreviewSettings:
    """What a preview is generated with, besides its prompt (A1111's preview_* fields)."""
    from_txt2img: bool
    prompt: str
    negative_prompt: str
    steps: int
    sampler_name: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    training_width: int
    training_height: int

    @classmethod
    def of(cls, request) -> "PreviewSettings":
        return cls(request.preview_from_txt2img, request.preview_prompt, request.preview_negative_prompt,
                   request.preview_steps, request.preview_sampler_name, request.preview_cfg_scale,
                   request.preview_seed, request.preview_width, request.preview_height,
                   request.training_width, request.training_height)

    @classmethod
    def at_training_size(cls, width: int, height: int) -> "PreviewSettings":
        """A1111's preview without "Read parameters from txt2img tab": the training prompt at the training size."""
        return cls(False, "", "", PREVIEW_STEPS, "", 0.0, -1, width, height, width, height)

    def request_fields(self, training_prompt: str) -> dict:
        if self.from_txt2img:
            return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "steps": self.steps,
                    "sampler_name": self.sampler_name, "cfg_scale": self.cfg_scale, "seed": self.seed,
                    "width": self.width, "height": self.height, "save_images": False}
        return {"prompt": training_prompt, "steps": PREVIEW_STEPS, "width": self.training_width,
                "height": self.training_height, "save_images": False}


# request fields, job → (image, infotext), or None when the job was interrupted before the image was made
Generate = Callable[[dict, Job], tuple[Image.Image, str] | None]


def save_preview(image: Image.Image, infotext: str, folder: Path, name: str, step: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{step}.png"
    save_image_with_geninfo(image, infotext, path)
    return path


def make_preview(generate: Generate, settings: PreviewSettings, training_prompt: str, job: Job, folder: Path,
                 result: TrainingResult, extra_fields: dict | None = None) -> Path | None:
    """Generate and save one preview of the training at `result.step`; it becomes the training job's live preview
    and is listed in `result.previews`. `extra_fields` go into the generation request as well (a ControlNet
    training's unit). The training's Interrupt stops the preview too: then None, nothing saved."""
    step = result.step
    preview_job = InnerJob(job, id=f"{job.id}-preview-{step}", kind="training-preview", run=lambda _job: None)
    made = generate({**settings.request_fields(training_prompt), **(extra_fields or {})}, preview_job)
    if made is None:
        return None
    image, infotext = made
    path = save_preview(image, infotext, folder, result.name, step)
    result.previews.append((step, path))
    job.set_preview(image)
    return path
