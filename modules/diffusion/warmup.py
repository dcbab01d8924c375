"""A first generation nobody waits for: after a checkpoint is loaded by a load job (at start, or chosen in the UI),
two denoising steps and one decode at the model's native size, with an empty prompt.

The first image on a fresh CUDA context is slow: cuBLAS and cuDNN create their handles and pick kernels, the
caching allocator grows, and with compile_unet the UNet is compiled for that size. Doing it in the load job means
the first user's image does not pay for it. It goes through the same path as a real job (our text encoding,
`sampling.denoise`, `sampling.decode`), so what it warms is what a job runs; nothing is saved or recorded.
"""
from __future__ import annotations

import logging
import time

import torch

from modules.diffusion import sampling
from modules.diffusion.rng import ImageRNG
from modules.jobs import Job
from modules.models.manager import LoadedModel
from modules.prompts import conditioning

log = logging.getLogger(__name__)


def native_size(model: LoadedModel) -> int:
    """The size the model was trained at, which is what most of its images are asked at."""
    return model.family.native_size_for(model.spec.v_prediction)


def warm_up(model: LoadedModel, device: torch.device, *, nan_check: bool) -> float:
    """Run the warm-up generation; returns its seconds. An SDXL refiner (which only refines) is skipped."""
    if not model.family.generates:
        return 0.0
    started = time.perf_counter()
    pipe = model.pipeline
    size = native_size(model)
    scale = sampling.vae_scale(pipe)
    plan = conditioning.schedule(conditioning.TextEncoder(pipe, model.family), "", "", 2)
    generators = ImageRNG((pipe.vae.config.latent_channels, size // scale, size // scale), [0], device=device)
    step = sampling.Pass("Euler", "Automatic", 2, 7.0, size, size, plan, generators.next(), rng=generators, seeds=[0])
    latents = sampling.denoise(model, pipe, step, Job(id="warm-up", kind="warm-up", run=lambda job: None),
                               preview=None, preview_every=0)
    sampling.decode(pipe, latents, nan_check=nan_check)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    log.info("Warmed up %s at %dx%d in %.1fs", model.info.name, size, size, elapsed)
    return elapsed
