"""One denoising pass on a loaded model, and the VAE on either side of it.

A pass is txt2img (from seed noise), img2img/inpaint (from an image's latents, part-way), the hires fix's
second pass, or a refiner finishing what another model started. The txt2img pipeline runs the first kind,
`modules.diffusion.pipelines.image_pipeline` the others; this module hands them conditioning, noise, a scheduler
and the pass's loop features (diffusion/features.py: progress, previews, prompt editing, ControlNet, …).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from modules.controlnet.control import PassControl
from modules.devices import input_device
from modules.diffusion import features, samplers, stop_points
from modules.jobs import Job
from modules.models.manager import LoadedModel
from modules.prompts import conditioning
from modules.script_callbacks import CallbackRegistry

log = logging.getLogger(__name__)

def vae_scale(pipeline) -> int:
    return 2 ** (len(pipeline.vae.config.block_out_channels) - 1)


@dataclass
class Pass:
    """What one denoising pass needs besides the model."""

    sampler_name: str
    scheduler: str
    steps: int                       # the schedule's length; an image pass runs int(steps * strength) of them
    cfg_scale: float
    width: int
    height: int
    plan: conditioning.ScheduledConditioning   # indexed by the steps this pass runs
    noise: torch.Tensor              # (batch, channels, height/8, width/8) from the job's seeds
    init_latents: torch.Tensor | None = None   # image passes: the image, encoded (batch-sized)
    mask: Image.Image | None = None            # white = repaint; None = the whole image
    masked_image_latents: torch.Tensor | None = None   # 9-channel inpainting models: the image minus the mask
    strength: float = 1.0
    start_latents: torch.Tensor | None = None  # a refiner continuing: latents already at the first step's level
    stop_after: int | None = None    # stop after this many of the pass's steps (where a refiner takes over)
    seeds: list[int] | None = None   # per image: seeds the noise ancestral samplers add at each step
    controls: list[PassControl] = field(default_factory=list)   # ControlNet units guiding this pass
    token_merging_ratio: float = 0.0   # ToMe on the UNet's self-attention for this pass (0: off)

    @property
    def runs_steps(self) -> int:
        """How many steps diffusers runs for this pass (its img2img rule)."""
        if self.init_latents is None:
            return self.steps
        return min(int(self.steps * self.strength), self.steps)


def steps_for_strength(steps: int, strength: float, exact: bool) -> int:
    """The schedule length for an image pass. A1111 runs int(steps × strength) steps; with `exact`
    (hires steps, the img2img_fix_steps setting) the schedule is stretched so that `steps` steps run."""
    if not exact or strength <= 0 or strength >= 1:
        return steps
    scheduled = int(steps / strength)
    while int(scheduled * strength) < steps:   # float rounding: make sure exactly `steps` run
        scheduled += 1
    return scheduled


def strength_for_remaining(remaining: int, steps: int) -> float:
    """The strength at which diffusers runs the last `remaining` of `steps` steps."""
    if remaining >= steps:
        return 1.0
    return min(1.0, (remaining + 0.5) / steps)   # int(steps * strength) == remaining, safe from float error


def denoise(model: LoadedModel, pipe, step: Pass, job: Job, *, preview: Callable | None, preview_every: int,
            progress_offset: int = 0, progress_total: int | None = None,
            callbacks: CallbackRegistry | None = None) -> torch.Tensor:
    """Run one pass; returns latents. `pipe` is the model's txt2img pipeline (image passes derive theirs);
    `preview(latents, pipeline)` makes the live preview every `preview_every` steps (None: no previews);
    `callbacks` holds extensions' cfg_denoiser / cfg_denoised / cfg_after_cfg callbacks."""
    # 1. The pipeline and its call: scheduler, conditioning, noise or the image to start from.
    pipe, kwargs = _pipeline_call(model, pipe, step)
    runs = step.runs_steps if step.stop_after is None else min(step.runs_steps, step.stop_after)
    state = features.PassState(runs=runs, offset=progress_offset, total=progress_total or runs)
    job.set_progress(progress_offset, state.total)
    # 2. The loop features the pass needs, in the order they wrap the denoiser (the first innermost).
    images = step.noise.shape[0]
    plan = step.plan
    used: list = [features.Progress(job, preview, preview_every, step.stop_after)]
    if step.controls:
        used.append(features.ControlNetGuidance(step.controls, state, images, steps=step.runs_steps))
    if plan.composable:   # AND: the parts follow the steps inside the denoiser call
        used.append(features.ComposablePrompts(plan, state, guided=step.cfg_scale > 1))
    elif plan.changes:
        used.append(features.PromptEditing(plan, images, pooled=model.family.xl))
    if step.token_merging_ratio > 0:
        used.append(features.TokenMerging(step.token_merging_ratio))
    if callbacks is not None:
        used.append(features.ScriptCallbacks(callbacks, state, images))
    used.append(features.StopPoints(lambda: job.should_stop, also=[control.model for control in step.controls]))

    # 3. The pipeline's loop, each feature's step end after each step.
    def on_step_end(pipeline, index, timestep, callback_kwargs):
        end = features.StepEnd(pipeline, index, callback_kwargs)
        for feature in used:
            feature.on_step_end(state, end)
        if state.stop:
            pipeline._interrupt = True   # diffusers skips the remaining steps; what we have is returned
        return callback_kwargs

    tensor_inputs = ["latents", *(name for feature in used for name in feature.tensor_inputs)]
    with contextlib.ExitStack() as stack:
        for feature in used:
            stack.enter_context(feature.patch(pipe))
        try:
            return pipe(**kwargs, callback_on_step_end=on_step_end,
                        callback_on_step_end_tensor_inputs=tensor_inputs).images
        except stop_points.Interrupted:
            if state.latents is None:   # not one step done: nothing to show
                raise
            return state.latents   # stopped mid-step: the last finished step's latents, as A1111 returns them


def _pipeline_call(model: LoadedModel, pipe, step: Pass) -> tuple[Any, dict[str, Any]]:
    """The pipeline for the pass (an image pass derives the img2img/inpaint one) with its scheduler, and the
    keyword arguments of its call."""
    image_pass = step.init_latents is not None or step.start_latents is not None
    if image_pass:
        from modules.diffusion.pipelines import image_pipeline   # diffusers is imported with the first model

        pipe = image_pipeline(pipe, model.family)
        pipe.seed_noise = step.noise
        pipe.start_latents = step.start_latents
    pipe.scheduler = samplers.create_scheduler(step.sampler_name, step.scheduler, model.scheduler_config,
                                               steps=step.steps)
    batch = step.noise.shape[0]
    dtype = pipe.unet.dtype
    cond, uncond = step.plan.at(0)
    kwargs: dict[str, Any] = dict(
        prompt_embeds=cond.embeds.repeat(batch, 1, 1).to(dtype),
        negative_prompt_embeds=uncond.embeds.repeat(batch, 1, 1).to(dtype),
        num_inference_steps=step.steps, guidance_scale=step.cfg_scale, height=step.height, width=step.width,
        output_type="latent", **samplers.call_kwargs(step.sampler_name),
    )
    if step.seeds:   # ancestral and SDE samplers draw noise every step: from the image's seed, so it repeats
        kwargs["generator"] = [torch.Generator("cpu").manual_seed(seed) for seed in step.seeds]
    if model.family.xl:   # the pooled text embeddings beside the sequence
        kwargs.update(pooled_prompt_embeds=cond.pooled.repeat(batch, 1).to(dtype),
                      negative_pooled_prompt_embeds=uncond.pooled.repeat(batch, 1).to(dtype))
    if image_pass:
        image = step.init_latents if step.init_latents is not None else step.start_latents
        mask = step.mask if step.mask is not None else Image.new("L", (step.width, step.height), 255)
        kwargs.update(image=image.to(dtype), mask_image=mask, strength=step.strength,
                      masked_image_latents=(step.masked_image_latents if step.masked_image_latents is not None
                                            else image).to(dtype))
    else:
        kwargs["latents"] = step.noise.to(dtype)
        if model.spec.inpainting:
            # txt2img on an inpainting model: everything masked, as A1111 conditions it.
            kwargs.update(image=Image.new("RGB", (step.width, step.height), (127, 127, 127)),
                          mask_image=Image.new("L", (step.width, step.height), 255), strength=1.0)
    return pipe, kwargs


def _vae_stops(vae, should_stop: Callable[[], bool] | None):
    return (features.stop_points_in(vae.decoder, [vae], should_stop) if should_stop is not None
            else contextlib.nullcontext())


def encode(pipe, images: list[Image.Image], should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """RGB images of one size → scaled latents (the distribution's mean: the same image gives the same latents).
    With `should_stop`, raises stop_points.Interrupted at the VAE's next block once it returns True."""
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(images).to(input_device(vae), vae.dtype)
    with torch.inference_mode(), _vae_stops(vae, should_stop):
        latents = vae.encode(pixels).latent_dist.mean
    if getattr(vae.config, "shift_factor", None):
        latents = latents - vae.config.shift_factor
    return (latents * vae.config.scaling_factor).clone()


def encode_masked(pipe, images: list[Image.Image], mask: Image.Image | None,
                  should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """What 9-channel inpainting models are conditioned on: the image with the repainted area blanked
    (mid-grey, as diffusers and A1111 do), encoded. No mask blanks all of it."""
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(images)
    if mask is None:
        keep = torch.zeros_like(pixels[:, :1])
    else:
        binary = np.asarray(mask.convert("L").resize((pixels.shape[3], pixels.shape[2]))) < 128
        keep = torch.from_numpy(binary)[None, None]
    masked = (pixels * keep).to(input_device(vae), vae.dtype)
    with torch.inference_mode(), _vae_stops(vae, should_stop):
        latents = vae.encode(masked).latent_dist.mean
    if getattr(vae.config, "shift_factor", None):
        latents = latents - vae.config.shift_factor
    return (latents * vae.config.scaling_factor).clone()


def decode(pipe, latents: torch.Tensor, *, nan_check: bool,
           should_stop: Callable[[], bool] | None = None) -> list[Image.Image]:
    """Latents → images; with `should_stop`, the decode raises stop_points.Interrupted at its next block (or tile)
    once it returns True."""
    vae = pipe.vae
    with torch.inference_mode(), _vae_stops(vae, should_stop):
        scaled = latents.to(vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            scaled = scaled + vae.config.shift_factor
        decoded = _decode_fitting(vae, scaled)
        if nan_check and vae.dtype != torch.float32 and torch.isnan(decoded).any():
            log.warning("VAE produced NaNs in %s; decoding again in fp32", vae.dtype)
            vae.to(torch.float32)
            decoded = _decode_fitting(vae, scaled.float())
    return pipe.image_processor.postprocess(decoded.float(), output_type="pil")


def _decode_fitting(vae, latents: torch.Tensor) -> torch.Tensor:
    """Decode at once; when that runs out of memory, decode again in tiles, one image at a time (as ComfyUI
    does) instead of losing the sampled job. A still-failing decode raises out-of-memory to the caller."""
    try:
        return vae.decode(latents).sample
    except torch.OutOfMemoryError:
        pass   # retried outside this block: the exception's traceback holds the failed attempt's tensors
    log.warning("out of memory decoding %s latents; decoding again in tiles", tuple(latents.shape))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    tiling, slicing = vae.use_tiling, vae.use_slicing
    vae.enable_tiling()
    vae.enable_slicing()
    try:
        decoded = vae.decode(latents).sample
    finally:
        vae.use_tiling, vae.use_slicing = tiling, slicing
    if decoded.shape[-2:] == latents.shape[-2:] or torch.isnan(decoded).all():   # sanity check of the retry
        raise torch.OutOfMemoryError("the tiled VAE decode gave no image")
    return decoded
