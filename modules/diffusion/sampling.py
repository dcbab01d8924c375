"""One denoising pass on a loaded model, and the VAE on either side of it.

A pass is txt2img (from seed noise), img2img/inpaint (from an image's latents, part-way), the hires fix's
second pass, or a refiner finishing what another model started. The txt2img pipeline runs the first kind,
`modules.diffusion.pipelines.image_pipeline` the others; this module hands them conditioning, noise, a scheduler and
a step callback (progress, previews, interrupt, prompt editing, stopping where a refiner takes over).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from modules.diffusion import compilation, samplers, stop_points
from modules.controlnet.control import PassControl, controlled_unet
from modules.devices import input_device
from modules.jobs import Job
from modules.models.manager import LoadedModel
from modules.prompts import conditioning
from modules.prompts.composable import composable_unet
from modules.script_callbacks import AfterCFGCallbackParams, CallbackRegistry, CFGDenoisedParams, CFGDenoiserParams
from modules.diffusion.token_merging import merged_tokens
from modules.diffusion.unet_forward import replaced_forward

log = logging.getLogger(__name__)

@contextlib.contextmanager
def circular_padding(modules: list[torch.nn.Module], enabled: bool):
    """Seamless tiling: every convolution wraps around the image edges for the duration of a job."""
    if not enabled:
        yield
        return
    convs = [m for module in modules for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    previous = [conv.padding_mode for conv in convs]
    for conv in convs:
        conv.padding_mode = "circular"
    try:
        yield
    finally:
        for conv, mode in zip(convs, previous):
            conv.padding_mode = mode


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
    image_pass = step.init_latents is not None or step.start_latents is not None
    if image_pass:
        from modules.diffusion.pipelines import image_pipeline   # diffusers is imported with the first model, not at start

        pipe = image_pipeline(pipe, model.family)
        pipe.seed_noise = step.noise
        pipe.start_latents = step.start_latents
    pipe.scheduler = samplers.create_scheduler(step.sampler_name, step.scheduler, model.scheduler_config,
                                               steps=step.steps)
    batch = step.noise.shape[0]
    dtype = pipe.unet.dtype
    sdxl = model.family.xl   # pooled text embeddings beside the sequence
    plan = step.plan
    cond, uncond = plan.at(0)
    kwargs: dict[str, Any] = dict(
        prompt_embeds=cond.embeds.repeat(batch, 1, 1).to(dtype),
        negative_prompt_embeds=uncond.embeds.repeat(batch, 1, 1).to(dtype),
        num_inference_steps=step.steps, guidance_scale=step.cfg_scale, height=step.height, width=step.width,
        output_type="latent", **samplers.call_kwargs(step.sampler_name),
    )
    if step.seeds:   # ancestral and SDE samplers draw noise every step: from the image's seed, so it repeats
        kwargs["generator"] = [torch.Generator("cpu").manual_seed(seed) for seed in step.seeds]
    if sdxl:
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
    runs = step.runs_steps if step.stop_after is None else min(step.runs_steps, step.stop_after)
    total = progress_total or runs
    tensor_inputs = ["latents"]
    if plan.changes:
        tensor_inputs += ["prompt_embeds", "add_text_embeds"] if sdxl else ["prompt_embeds"]
    job.set_progress(progress_offset, total)

    def step_conditioning(pipeline, index: int, callback_kwargs: dict) -> None:
        """Prompt editing and alternation: hand the pipeline the next step's conditioning (its CFG layout)."""
        cond, uncond = plan.at(index)
        embeds = [cond.embeds.repeat(batch, 1, 1)]
        pooled = [cond.pooled.repeat(batch, 1)] if sdxl else []
        if pipeline.do_classifier_free_guidance:
            embeds.insert(0, uncond.embeds.repeat(batch, 1, 1))
            pooled[:0] = [uncond.pooled.repeat(batch, 1)] if sdxl else []
        previous = callback_kwargs["prompt_embeds"]
        callback_kwargs["prompt_embeds"] = torch.cat(embeds).to(previous.device, previous.dtype)
        if sdxl:
            callback_kwargs["add_text_embeds"] = torch.cat(pooled).to(previous.device, previous.dtype)

    current = {"step": 0, "latents": None}

    def on_step_end(pipeline, index, timestep, callback_kwargs):
        done = index + 1
        current["step"] = done
        current["latents"] = callback_kwargs["latents"]
        job.set_progress(progress_offset + done, total)
        if preview is not None and preview_every > 0 and done % preview_every == 0:
            job.set_preview(preview(callback_kwargs["latents"], pipeline))
        if job.should_stop or (step.stop_after is not None and done >= step.stop_after):
            pipeline._interrupt = True   # diffusers skips the remaining steps; what we have is returned
        elif done < runs and not plan.composable and plan.changes_at(done):
            step_conditioning(pipeline, done, callback_kwargs)
        if callbacks is not None and callbacks.has("cfg_after_cfg"):
            after = AfterCFGCallbackParams(callback_kwargs["latents"], progress_offset + index, total)
            callbacks.fire("cfg_after_cfg", after)
            callback_kwargs["latents"] = after.x
        return callback_kwargs

    with contextlib.ExitStack() as stack:
        # Guidance start/end are fractions of the whole pass, also where a refiner takes over part-way.
        stack.enter_context(controlled_unet(pipe.unet, step.controls, lambda: current["step"] / max(step.runs_steps, 1),
                                            batch))
        if plan.composable:   # AND: the UNet answers with the weighted parts (they follow the steps themselves)
            stack.enter_context(composable_unet(
                pipe.unet, lambda: (plan.parts_at(current["step"]), plan.at(current["step"])[1]),
                guided=step.cfg_scale > 1))
            tensor_inputs = ["latents"]
        stack.enter_context(merged_tokens(pipe.unet, step.token_merging_ratio))
        stack.enter_context(cfg_callbacks(pipe.unet, callbacks, lambda: progress_offset + current["step"], total,
                                          batch))
        stack.enter_context(stop_points_in(pipe.unet, [pipe.unet, *(control.model for control in step.controls)],
                                           lambda: job.should_stop))
        try:
            return pipe(**kwargs, callback_on_step_end=on_step_end,
                        callback_on_step_end_tensor_inputs=tensor_inputs).images
        except stop_points.Interrupted:
            if current["latents"] is None:   # not one step done: nothing to show
                raise
            return current["latents"]   # stopped mid-step: the last finished step's latents, as A1111 returns them


def stop_points_in(unet, modules: list, should_stop: Callable[[], bool]):
    """Stop points in the pass's models (not in a compiled UNet); attention sliced where it runs on the CPU."""
    if compilation.compiled_mode(unet) != compilation.NONE:
        return contextlib.nullcontext()
    on_cpu = next(unet.parameters()).device.type == "cpu"   # (under --lowvram the weights are "meta": on the GPU)
    return stop_points.inside(modules, should_stop, slice_attention=on_cpu)


@contextlib.contextmanager
def cfg_callbacks(unet, callbacks: CallbackRegistry | None, step_of, total: int, images: int):
    """A1111's on_cfg_denoiser / on_cfg_denoised around each UNet call: the first sees (and may replace) the
    UNet's input latents with the text conditioning split into cond and uncond, the second its output."""
    if callbacks is None or not (callbacks.has("cfg_denoiser") or callbacks.has("cfg_denoised")):
        yield
        return
    original = unet.forward

    def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        guided = sample.shape[0] == 2 * images   # diffusers batches [uncond, cond] under CFG
        uncond, cond = encoder_hidden_states.chunk(2) if guided else (None, encoder_hidden_states)
        before = CFGDenoiserParams(sample, None, timestep, step_of(), total, cond, uncond)
        callbacks.fire("cfg_denoiser", before)
        output = original(before.x, timestep, encoder_hidden_states, *args, **kwargs)
        prediction = output[0] if isinstance(output, tuple) else output.sample
        after = CFGDenoisedParams(prediction, step_of(), total, unet)
        callbacks.fire("cfg_denoised", after)
        if isinstance(output, tuple):
            return (after.x, *output[1:])
        output.sample = after.x
        return output

    with replaced_forward(unet, forward):
        yield


def _vae_stops(vae, should_stop: Callable[[], bool] | None):
    return stop_points_in(vae.decoder, [vae], should_stop) if should_stop is not None else contextlib.nullcontext()


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
