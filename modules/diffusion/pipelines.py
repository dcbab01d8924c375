"""The diffusers pipelines that start from an image: img2img, inpaint, hires fix and the refiner's take-over.

All of them are diffusers' inpaint pipelines (a mask of all white is plain img2img), sharing the loaded
model's components. Two methods are ours, `get_timesteps` and `prepare_latents`: the pass's A1111 sampler
(diffusion/ksampling) has already worked out which model calls the pass makes and the latents it starts from
(A1111 noises the image with the seeds' own noise, and a refiner continues part-way).
"""
from __future__ import annotations

import torch
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline


class _SeedNoise:
    """The pass's sampler (ksampling.scheduler.KSamplerScheduler) decides the timesteps and the starting latents:
    the image already noised as A1111 noises it, or a refiner's latents where the base model stopped."""

    def get_timesteps(self, num_inference_steps, strength, device, denoising_start=None):
        timesteps = self.scheduler.timesteps
        return timesteps, len(timesteps)

    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator,
                        latents=None, image=None, timestep=None, is_strength_max=True, return_noise=False,
                        return_image_latents=False, **_):
        start = self.scheduler.current_latents().to(device=device, dtype=dtype)
        outputs = (start,)
        if return_noise:   # only diffusers' own inpaint blend uses it, and that is given nothing to blend
            outputs += (torch.zeros_like(start),)
        if return_image_latents:
            outputs += (image.to(device=device, dtype=dtype),)
        return outputs


class SeededInpaintPipeline(_SeedNoise, StableDiffusionInpaintPipeline):
    pass


class SeededInpaintXLPipeline(_SeedNoise, StableDiffusionXLInpaintPipeline):
    pass


def image_pipeline(pipeline, family):
    """An img2img/inpaint pipeline over the same modules as `pipeline` (its current VAE, LoRAs and all), for a
    model of `family` (a models.families.Family)."""
    cls = SeededInpaintXLPipeline if family.xl else SeededInpaintPipeline
    image_pipe = cls.from_pipe(pipeline)
    image_pipe.set_progress_bar_config(disable=True)
    return image_pipe
