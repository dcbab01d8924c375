"""The diffusers pipelines that start from an image: img2img, inpaint, hires fix and the refiner's take-over.

All of them are diffusers' inpaint pipelines (a mask of all white is plain img2img), sharing the loaded
model's components. One method is ours, `prepare_latents`: diffusers draws the starting noise from a
`torch.Generator` and treats given `latents` as pure noise even when strength < 1, while A1111's seeds
(variation seeds, resize-from, the CPU/GPU source) need the job's own noise, and a refiner continues
from latents that are already part-way denoised.
"""
from __future__ import annotations

import torch
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline


class _SeedNoise:
    """Set `seed_noise` (and optionally `start_latents`) before calling; the image is always given as latents."""

    seed_noise: torch.Tensor | None = None
    start_latents: torch.Tensor | None = None   # already at the first step's noise level: used unchanged

    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator,
                        latents=None, image=None, timestep=None, is_strength_max=True, return_noise=False,
                        return_image_latents=False, **_):
        noise = self.seed_noise.to(device=device, dtype=dtype)
        image_latents = image.to(device=device, dtype=dtype)
        if self.start_latents is not None:
            start = self.start_latents.to(device=device, dtype=dtype)
        elif is_strength_max:
            start = noise * self.scheduler.init_noise_sigma
        else:
            start = self.scheduler.add_noise(image_latents, noise, timestep)
        outputs = (start,)
        if return_noise:
            outputs += (noise,)
        if return_image_latents:
            outputs += (image_latents,)
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
