"""A job's denoising passes: the first one, handing over to a refiner part-way when the request has one, and the
hires fix's second one (upscale the first pass, denoise again); live previews for each."""
from __future__ import annotations

import dataclasses

import torch
from PIL import Image

from modules import extra_networks, masking
from modules.diffusion import previews, sampling
from modules.generation.context import JobContext, Refiner
from modules.jobs import JobError
from modules.models.manager import LoadedModel
from modules.postprocess.upscalers import UpscalerError, upscale_latents
from modules.prompts import conditioning


def refiner_for(generator, request, model: LoadedModel) -> Refiner | None:
    if not request.refiner_checkpoint or request.refiner_switch_at >= 1.0:
        return None
    refiner = generator.load(request.refiner_checkpoint, make_current=False)
    if refiner.info.name == model.info.name:
        return None
    if refiner.family.xl != model.family.xl or refiner.spec.inpainting:   # another latent space, or a 9-channel UNet
        raise JobError(f"refiner_checkpoint: {refiner.info.name} ({refiner.spec.label}) cannot refine "
                       f"{model.info.name} ({model.spec.label})")
    return Refiner(refiner, request.refiner_switch_at)


def run_pass(generator, ctx: JobContext, step: sampling.Pass, refiner: Refiner | None) -> torch.Tensor:
    """One pass; with a refiner, the base stops at "switch at" of its model calls and the refiner's model goes on
    with the same sampler (its state, its noise) for the rest, as A1111 swaps the model under its sampler."""
    job, model = ctx.job, ctx.model
    every = int(ctx.settings.show_progress_every_n_steps)
    callbacks = generator.scripts.callbacks
    if step.init_latents is not None and step.strength <= 0:   # denoising strength 0: the image as it is
        return step.init_latents
    if refiner is not None:
        step.switch_at = refiner.switch_at
    latents = sampling.denoise(model, model.pipeline, step, job, preview=preview_maker(generator, ctx, model),
                               preview_every=every, callbacks=callbacks)
    if refiner is None or job.should_stop or step.sampler is None or step.sampler.finished:
        return latents
    generator.manager.placement.release(model)
    job.textinfo = f"Refiner: {refiner.model.info.name}"
    encoder = generator.encoder(refiner.model, 1, ctx)
    done = step.sampler.calls_done
    remaining = max(step.calls - done, 1)
    refined = dataclasses.replace(
        step, plan=conditioning.schedule_batch(encoder, *ctx.batch_texts, remaining),
        masked_image_latents=None, resume=step.sampler, switch_at=None, calls=remaining,
        controls=[])   # ControlNets fit the base model's UNet, not the refiner's
    return sampling.denoise(refiner.model, refiner.model.pipeline, refined, job,
                            preview=preview_maker(generator, ctx, refiner.model), preview_every=every,
                            progress_offset=done, progress_total=step.calls, callbacks=callbacks)


def preview_maker(generator, ctx: JobContext, model: LoadedModel):
    """The live-preview maker for a pass on `model` (show_progress_type), or None when previews are off."""
    if not ctx.settings.live_previews_enable:
        return None
    method = ctx.settings.show_progress_type
    family = model.family
    if generator.previews is None:
        def render(latent):
            return previews.latent_preview(latent[0], family)
    elif method == "Full":
        # The checkpoint's own VAE: only the job's thread may run it (offload hooks, the fp32 NaN fallback),
        # so this preview is made now, in the sampling loop; it is slow anyway, and chosen knowingly.
        return lambda latents, pipeline: generator.previews.image(latents, family, method, pipeline)
    else:
        def render(latent):
            return generator.previews.image(latent, family, method)
    return lambda latents, pipeline: previews.deferred(render, latents)


# ------------------------------------------------------------- the hires fix's second pass

def upscaled_first_pass(generator, ctx: JobContext, latents: torch.Tensor) -> torch.Tensor:
    """The first pass at the hires size: in latent space, or decoded, upscaled and encoded again."""
    pipe = ctx.model.pipeline
    request = ctx.request
    width, height = ctx.hires.target
    if generator.upscalers is not None and generator.upscalers.is_latent(request.hr_upscaler):
        scale = sampling.vae_scale(pipe)
        cover_w, cover_h = ctx.hires.cover
        upscaled = upscale_latents(latents, cover_h // scale, cover_w // scale, request.hr_upscaler)
        top, left = (cover_h - height) // scale // 2, (cover_w - width) // scale // 2
        return upscaled[:, :, top:top + height // scale, left:left + width // scale]
    decoded = sampling.decode(pipe, latents, nan_check=generator.manager.devices.nan_check,
                              should_stop=lambda: ctx.job.interrupted)
    pictures = [upscale_to(generator, image, width, height, request.hr_upscaler) for image in decoded]
    return torch.cat([sampling.encode(pipe, [picture], should_stop=lambda: ctx.job.interrupted)
                      for picture in pictures])


def upscale_to(generator, image: Image.Image, width: int, height: int, upscaler: str) -> Image.Image:
    """A pixel upscaler to cover width×height, then A1111's crop to the exact size."""
    scale = max(width / image.width, height / image.height)
    if generator.upscalers is not None and upscaler not in ("None", None):
        try:
            image = generator.upscalers.upscale(image, scale, upscaler)
        except UpscalerError as error:
            raise JobError(f"hr_upscaler: {error}") from None
    return masking.resize_image(1, image, width, height)


def second_pass(generator, ctx: JobContext, latents: torch.Tensor, seed_noise, seeds: list[int]) -> sampling.Pass:
    """The hires pass: A1111 runs exactly the hires steps, with its prompt and new generators for the seeds
    at the hires size (`seed_noise(width, height)`), from the upscaled first pass."""
    request = ctx.request
    job = ctx.job
    job.textinfo = "Hires fix"
    pipe = ctx.model.pipeline
    width, height = ctx.hires.target
    upscaled = upscaled_first_pass(generator, ctx, latents)
    steps = request.hr_second_pass_steps or request.steps
    sampler_name = request.hr_sampler_name or request.sampler_name
    texts, negatives = ctx.batch_texts
    if request.hr_prompt or request.hr_negative_prompt:
        hr = extra_networks.prepare_prompt(request.hr_prompt or request.prompt,
                                           request.hr_negative_prompt or request.negative_prompt,
                                           request.styles, generator.networks)
        # A1111: an empty hires prompt is each image's own prompt
        texts = [hr.text] * len(texts) if request.hr_prompt else texts
        negatives = [hr.negative_text] * len(negatives) if request.hr_negative_prompt else negatives
    plan = conditioning.schedule_batch(ctx.encoder, texts, negatives, sampling.plan_length(sampler_name, steps))
    generators = seed_noise(width, height)
    step = sampling.Pass(sampler_name, request.hr_scheduler or request.scheduler, steps, request.cfg_scale, width,
                         height, plan, generators.next(), rng=generators,
                         init_latents=upscaled.to(generator.manager.devices.device),
                         strength=request.denoising_strength, exact_steps=True, hires=True, eta=request.eta,
                         settings=ctx.sampler_settings, seeds=seeds, controls=ctx.hires_controls,
                         token_merging_ratio=ctx.tome_hires_ratio)
    if ctx.model.spec.inpainting:   # the whole image is repainted: its conditioning image is all blank
        blank = sampling.encode_masked(pipe, [Image.new("RGB", (width, height))], None)
        step.masked_image_latents = blank.repeat(upscaled.shape[0], 1, 1, 1)
    return step
