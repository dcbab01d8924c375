"""Everything one generation has settled before its first batch, handed to its passes and its results."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modules.diffusion.ksampling.plan import SamplerSettings
from modules.extra_networks import PreparedPrompt
from modules.generation.hires import HiresPlan
from modules.generation.img2img import ImageInputs
from modules.jobs import Job
from modules.models.manager import LoadedModel
from modules.options import Settings
from modules.prompts.conditioning import ScheduledConditioning, TextEncoder


class ScriptHooks:
    """What a generation calls at A1111's per-batch and per-image hook points (modules.processing gives one that
    runs the scripts' hooks); this one does nothing."""

    p: Any = None   # A1111's `p`, passed to image-saved callbacks

    def before_batch(self, batch_number: int, prompts: list[str], seeds: list[int], subseeds: list[int]) -> None:
        pass

    def after_batch(self, images: list, batch_number: int) -> list:
        return images

    def postprocess_image(self, image):
        return image


@dataclass
class ImagePrompts:
    """What each image of a job is made from when a script decided it image by image (A1111's `p.all_prompts`,
    `all_negative_prompts`, `all_seeds`, `all_subseeds`, set in `process()`): one entry per image of the job
    (batch_size × n_iter). A list left None follows the request. Prompts here have their styles applied already,
    as A1111's `p.all_prompts` do."""

    prompts: list[str] | None = None
    negative_prompts: list[str] | None = None
    seeds: list[int] | None = None
    subseeds: list[int] | None = None


@dataclass
class Refiner:
    """Another checkpoint that takes over at `switch_at` of each pass's steps."""

    model: LoadedModel
    switch_at: float

    def infotext(self) -> dict:
        info = self.model.info
        return {"Refiner": f"{info.name} [{info.shorthash}]" if info.shorthash else info.name,
                "Refiner switch at": self.switch_at}


@dataclass
class JobContext:
    request: Any                         # the GenerationRequest
    job: Job
    settings: Settings                   # the job's settings, fixed when it started
    model: LoadedModel
    hooks: ScriptHooks
    extra_params: dict                   # more infotext keys (a script's: A1111's p.extra_generation_params)
    prepared: PreparedPrompt | None = None       # the first image's prompt (the job's, when all are the same)
    image_prepared: list[PreparedPrompt] = field(default_factory=list)   # each image's
    clip_skip: int = 1
    encoder: TextEncoder | None = None
    refiner: Refiner | None = None
    seeds: list[int] = field(default_factory=list)      # each image's seed and variation seed
    subseeds: list[int] = field(default_factory=list)
    resize_from: tuple[int, int] | None = None
    inputs: ImageInputs | None = None    # img2img: the prepared init images and mask
    encoded: dict | None = None          # img2img: the init images' latents
    hires: HiresPlan | None = None
    controls: list = field(default_factory=list)          # ControlNet units, annotated and loaded
    first_controls: list = field(default_factory=list)    # their controls for the first pass
    hires_controls: list = field(default_factory=list)
    tome_ratio: float = 0.0
    tome_hires_ratio: float = 0.0
    sampler_settings: SamplerSettings = field(default_factory=SamplerSettings)   # the settings samplers read
    plan: ScheduledConditioning | None = None   # the running batch's first-pass conditioning
    batch_texts: tuple[list[str], list[str]] = ((), ())   # the running batch's texts to encode (prompt, negative)
    warnings: list[str] = field(default_factory=list)
    job_params: dict = field(default_factory=dict)        # infotext values the same for every image of a batch
    used_loras: list = field(default_factory=list)        # the LoRAs on now (the running batches' group)
    vae_info: Any = None                                  # the external VAE's file info (None: the checkpoint's)

    def batch_prepared(self, batch_index: int) -> list[PreparedPrompt]:
        size = self.request.batch_size
        return self.image_prepared[batch_index * size:(batch_index + 1) * size]

    @property
    def image_mode(self) -> bool:
        return bool(self.request.init_images)

    @property
    def outdir(self) -> str:
        return "img2img" if self.image_mode else "txt2img"
