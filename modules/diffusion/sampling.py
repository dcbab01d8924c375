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
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from PIL import Image

from modules.controlnet.control import PassControl
from modules.devices import input_device
from modules.diffusion import features, samplers, stop_points
from modules.diffusion.ksampling import plan as ksampling_plan
from modules.diffusion.ksampling.plan import ModelNoise, PassNoise, SamplerSettings, multiplier
from modules.diffusion.rng import ImageRNG
from modules.jobs import Job
from modules.models.manager import LoadedModel
from modules.prompts import conditioning
from modules.script_callbacks import CallbackRegistry

if TYPE_CHECKING:
    from modules.diffusion.ksampling.scheduler import KSamplerScheduler

log = logging.getLogger(__name__)

def vae_scale(pipeline) -> int:
    return 2 ** (len(pipeline.vae.config.block_out_channels) - 1)


@dataclass
class Pass:
    """What one denoising pass needs besides the model."""

    sampler_name: str
    scheduler: str
    steps: int                       # the request's steps (an image pass runs A1111's img2img count of them)
    cfg_scale: float
    width: int
    height: int
    plan: conditioning.ScheduledConditioning   # indexed by the pass's model calls, as A1111 indexes it
    noise: torch.Tensor              # (batch, channels, height/8, width/8): the seeds' first draw
    rng: ImageRNG | None = None      # the seeds' generators (their first draw was `noise`): the step noise
    init_latents: torch.Tensor | None = None   # image passes: the image, encoded (batch-sized)
    mask: Image.Image | None = None            # white = repaint; None = the whole image
    masked_image_latents: torch.Tensor | None = None   # 9-channel inpainting models: the image minus the mask
    strength: float = 1.0
    exact_steps: bool = False        # run exactly `steps` (hires fix; img2img with img2img_fix_steps)
    hires: bool = False              # the hires fix's second pass (infotext)
    eta: float | None = None         # the request's eta; None: the eta setting for the sampler's kind
    settings: SamplerSettings = field(default_factory=SamplerSettings)
    resume: KSamplerScheduler | None = None   # a refiner continuing the base model's sampler where it stopped
    switch_at: float | None = None   # hand over to a refiner after this fraction of the model calls
    seeds: list[int] | None = None   # per image: the Brownian tree seeds of the SDE samplers
    controls: list[PassControl] = field(default_factory=list)   # ControlNet units guiding this pass
    token_merging_ratio: float = 0.0   # ToMe on the UNet's self-attention for this pass (0: off)
    # Set by `denoise`: the sampler it ran (a refiner continues it), its model calls and infotext keys.
    sampler: KSamplerScheduler | None = None
    calls: int = 0
    infotext: dict = field(default_factory=dict)


def plan_length(sampler_name: str, steps: int) -> int:
    """How many model calls prompt-editing schedules are spread over: A1111's steps × step multiplier."""
    return steps * multiplier(samplers.get_sampler(samplers.resolve(sampler_name)[0]))


def denoise(model: LoadedModel, pipe, step: Pass, job: Job, *, preview: Callable | None, preview_every: int,
            progress_offset: int = 0, progress_total: int | None = None,
            callbacks: CallbackRegistry | None = None) -> torch.Tensor:
    """Run one pass; returns latents. `pipe` is the model's txt2img pipeline (image passes derive theirs);
    `preview(latents, pipeline)` makes the live preview every `preview_every` model calls (None: no previews);
    `callbacks` holds extensions' cfg_denoiser / cfg_denoised / cfg_after_cfg callbacks."""
    # 1. The pipeline, the sampler started on it, and the pipeline call's arguments.
    cfgpp = step.resume is None and samplers.get_sampler(
        samplers.resolve(step.sampler_name)[0]).algorithm == "ddim_cfgpp"
    capture = _UnguidedCapture() if cfgpp else None
    pipe, kwargs = _pipeline_call(model, pipe, step, capture)
    stop_after = None if step.switch_at is None else max(1, int(step.calls * step.switch_at))
    runs = step.calls if stop_after is None else min(step.calls, stop_after)
    state = features.PassState(runs=runs, offset=progress_offset, total=progress_total or step.calls)
    job.set_progress(progress_offset, state.total)
    # 2. The loop features the pass needs, in the order they wrap the denoiser (the first innermost).
    images = step.noise.shape[0]
    plan = step.plan
    used: list = [features.Progress(job, preview, preview_every, stop_after)]
    if step.controls:
        used.append(features.ControlNetGuidance(step.controls, state, images, steps=step.calls))
    if plan.composable:   # AND: the parts follow the steps inside the denoiser call
        used.append(features.ComposablePrompts(plan, state, guided=step.cfg_scale > 1))
    elif plan.changes:
        used.append(features.PromptEditing(plan, images, pooled=model.family.xl))
    if step.token_merging_ratio > 0:
        used.append(features.TokenMerging(step.token_merging_ratio))
    if callbacks is not None:
        used.append(features.ScriptCallbacks(callbacks, state, images))
    if capture is not None:
        used.append(capture)
    used.append(features.StopPoints(lambda: job.should_stop, also=[control.model for control in step.controls]))

    # 3. The pipeline's loop, each feature's step end after each model call.
    def on_step_end(pipeline, index, timestep, callback_kwargs):
        end = features.StepEnd(pipeline, index, callback_kwargs)
        for feature in used:
            feature.on_step_end(state, end)
        if state.stop:
            pipeline._interrupt = True   # diffusers skips the remaining steps; what we have is returned
        return callback_kwargs

    tensor_inputs = ["latents", *(name for feature in used for name in feature.tensor_inputs)]
    sampler = step.sampler
    with contextlib.ExitStack() as stack:
        for feature in used:
            stack.enter_context(feature.patch(pipe))
        try:
            pipe(**kwargs, callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=tensor_inputs)
        except stop_points.Interrupted:
            if state.latents is None:   # not one step done: nothing to show
                raise
            return state.latents   # stopped mid-step: the last finished step's latents, as A1111 returns them
    latents = sampler.current_latents()   # the sampler's own float32 latents, not the pipeline's copy
    if step.mask is not None and step.init_latents is not None and sampler.finished:
        latents = _kept_area(step, latents)
    return latents


class _UnguidedCapture(features.LoopFeature):
    """DDIM CFG++ points its step along the unguided prediction: the UNet's last (uncond, cond) outputs."""

    def __init__(self):
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def patch(self, pipe):
        return features.unet_outputs(features.denoiser_of(pipe), self._keep)

    def _keep(self, output: torch.Tensor) -> None:
        uncond, cond = output.chunk(2)   # diffusers batches [uncond, cond] under classifier-free guidance
        self.last = (uncond.float(), cond.float())

    def __call__(self):
        return self.last


def _keep_mask(step: Pass, latents: torch.Tensor) -> torch.Tensor:
    """A1111's p.mask at latent size: 1 where the image is kept (mask_round: rounded)."""
    from modules.masking import latent_mask

    repaint = latent_mask(step.mask, latents.shape[3], latents.shape[2]).to(latents.device, latents.dtype)
    return 1.0 - repaint


def _kept_area(step: Pass, latents: torch.Tensor) -> torch.Tensor:
    """The finished latents with the kept area back to the image's (A1111's blend after sampling)."""
    keep = _keep_mask(step, latents)
    return latents * (1.0 - keep) + step.init_latents.to(latents.device, latents.dtype) * keep


def _pipeline_call(model: LoadedModel, pipe, step: Pass,
                   capture: _UnguidedCapture | None) -> tuple[Any, dict[str, Any]]:
    """The pipeline for the pass (an image pass derives the img2img/inpaint one) with its sampler started, and
    the keyword arguments of its call."""
    image_pass = step.init_latents is not None or step.resume is not None
    if image_pass:
        from modules.diffusion.pipelines import image_pipeline   # diffusers is imported with the first model

        pipe = image_pipeline(pipe, model.family)
    if step.resume is not None:   # a refiner: the base's sampler goes on with this model
        sampler = step.resume
        sampler.restart_timesteps()
    else:
        from modules.diffusion.ksampling.scheduler import KSamplerScheduler   # imports diffusers

        sampler = KSamplerScheduler()
        chosen = samplers.get_sampler(samplers.resolve(step.sampler_name)[0])
        if step.rng is None or step.seeds is None:
            raise ValueError("a pass needs its seeds' generators (rng.ImageRNG) and seeds")
        noise = PassNoise(step.noise, step.rng, step.seeds)
        started = ksampling_plan.start(
            sampler, chosen, samplers.resolve(step.sampler_name, step.scheduler)[1],
            ModelNoise(model.alphas_cumprod, model.spec.prediction_type, model.family.xl),
            steps=step.steps, noise=noise, settings=step.settings, eta=step.eta,
            image=step.init_latents.float() if step.init_latents is not None else None, strength=step.strength,
            exact_steps=step.exact_steps, hires=step.hires,
            unguided=capture, cfg_scale=step.cfg_scale)
        step.calls, step.infotext = started.calls, started.infotext
        if step.mask is not None and step.init_latents is not None:
            _blend_kept_area(sampler, step)
    step.sampler = sampler
    pipe.scheduler = sampler
    batch = step.noise.shape[0]
    dtype = pipe.unet.dtype
    cond, uncond = step.plan.at(0)
    kwargs: dict[str, Any] = dict(
        prompt_embeds=cond.batch_embeds(batch).to(dtype),
        negative_prompt_embeds=uncond.batch_embeds(batch).to(dtype),
        num_inference_steps=max(step.calls, 1), guidance_scale=step.cfg_scale, height=step.height,
        width=step.width, output_type="latent",
    )
    if model.family.xl:   # the pooled text embeddings beside the sequence
        kwargs.update(pooled_prompt_embeds=cond.batch_pooled(batch).to(dtype),
                      negative_pooled_prompt_embeds=uncond.batch_pooled(batch).to(dtype))
    start = sampler.current_latents()
    if image_pass:
        image = step.init_latents if step.init_latents is not None else start
        # The 4-channel models' blend of the kept area is the sampler's (A1111's, on the prediction), so
        # diffusers' own is given an all-white mask; 9-channel models see the real mask as conditioning.
        mask = step.mask if step.mask is not None and model.spec.inpainting else None
        mask = mask if mask is not None else Image.new("L", (step.width, step.height), 255)
        kwargs.update(image=image.to(dtype), mask_image=mask, strength=1.0,
                      masked_image_latents=(step.masked_image_latents if step.masked_image_latents is not None
                                            else image).to(dtype))
    else:
        kwargs["latents"] = start.to(dtype)
        if model.spec.inpainting:
            # txt2img on an inpainting model: everything masked, as A1111 conditions it.
            kwargs.update(image=Image.new("RGB", (step.width, step.height), (127, 127, 127)),
                          mask_image=Image.new("L", (step.width, step.height), 255), strength=1.0)
    return pipe, kwargs


def _blend_kept_area(sampler: KSamplerScheduler, step: Pass) -> None:
    """A1111's CFGDenoiser inpainting blend: each prediction keeps the image where the mask keeps it."""
    init = step.init_latents.float()
    keep = None

    def blend(answer: torch.Tensor, level) -> torch.Tensor:
        nonlocal keep
        if keep is None:
            keep = _keep_mask(step, init).to(answer.device)
        return init.to(answer.device) * keep + (1.0 - keep) * answer

    def blend_input(x: torch.Tensor) -> torch.Tensor:
        nonlocal keep
        if keep is None:
            keep = _keep_mask(step, init).to(x.device)
        return x * (1.0 - keep) + init.to(x.device) * keep

    if samplers.get_sampler(samplers.resolve(step.sampler_name)[0]).ignores_schedule:
        sampler.blend_input = blend_input   # A1111's timestep samplers blend before the model (mask_before_denoising)
    else:
        sampler.blend = blend


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
    return to_images(decoded)


def to_images(decoded: torch.Tensor) -> list[Image.Image]:
    """VAE output in [-1, 1] → 8-bit images as A1111 makes them: scaled by 255 and truncated, not rounded."""
    pixels = torch.clamp((decoded.float() + 1.0) / 2.0, min=0.0, max=1.0)
    return [Image.fromarray((255. * np.moveaxis(image.cpu().numpy(), 0, 2)).astype(np.uint8)) for image in pixels]


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
