"""The denoising objective every trainer here minimises, and the latents it starts from.

It is the one A1111's training runs through LDM's `LatentDiffusion.forward`/`p_losses`: a timestep drawn uniformly
from the model's training schedule, Gaussian noise added by that schedule (diffusers' DDPMScheduler built from the
checkpoint's own scheduler config), and the mean squared error between the UNet's prediction and the noise — or
the velocity, for v-prediction models (SD 2.x 768-v). A1111's "PNG alpha channel as loss weight" multiplies the
squared error by a per-pixel weight map first.

Randomness comes from generators the caller seeds (per optimiser step), drawn on the CPU and moved to the device,
so a training resumed from a saved state draws exactly what an uninterrupted one would have.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LATENT_SAMPLING_METHODS = ("once", "deterministic", "random")


def training_scheduler(scheduler_config: dict):
    """The model's training noise schedule (betas, prediction type, zero-terminal-SNR rescale): a DDPMScheduler.
    Imported here, on the worker: the API imports this module while the worker may be importing diffusers for the
    first model, and diffusers' lazy top-level module is not safe to enter from two threads at once."""
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config)


@dataclass
class LatentDistribution:
    """One image's VAE posterior: A1111 keeps it for "random" latent sampling, which draws anew each step."""
    mean: torch.Tensor   # [4, h, w], already multiplied by the VAE's scaling factor
    std: torch.Tensor

    def sample(self, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            return self.mean
        return self.mean + self.std * torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)


@torch.no_grad()
def encode(vae, pixels: torch.Tensor) -> LatentDistribution:
    """Encode one image (3×H×W in [-1, 1]) to its scaled latent distribution, kept on the CPU."""
    device = next(vae.parameters()).device
    posterior = vae.encode(pixels.unsqueeze(0).to(device=device, dtype=vae.dtype)).latent_dist
    scale = float(vae.config.scaling_factor)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    mean = ((posterior.mean.float() - shift) * scale)[0].cpu()
    return LatentDistribution(mean=mean, std=(posterior.std.float() * scale)[0].cpu())


@dataclass
class NoisedBatch:
    """A batch's draws: its latents noised at a timestep each, and what the model should predict for them."""
    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor           # the noise, or the velocity for v-prediction
    v_prediction: bool


def noised(scheduler, latents: torch.Tensor, generator: torch.Generator, device: torch.device, *,
           noise_offset: float = 0.0) -> NoisedBatch:
    """A timestep per image, then the noise (plus kohya's per-image, per-channel noise offset), drawn in that order
    from `generator` on the CPU; every trainer's draws, so each is reproducible and resumable alike."""
    count, channels = latents.shape[:2]
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (count,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((count, channels, 1, 1), generator=generator)
    latents, noise, timesteps = latents.to(device), noise.to(device), timesteps.to(device)
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
    return NoisedBatch(scheduler.add_noise(latents, noise, timesteps), timesteps, target, v_prediction)


def denoising_loss(unet, scheduler, latents: torch.Tensor, encoder_hidden_states: torch.Tensor,
                   generator: torch.Generator, *, weight: torch.Tensor | None = None,
                   added_cond_kwargs: dict | None = None) -> torch.Tensor:
    """The batch's mean loss (a scalar with a graph back to whatever requires grad in the inputs or the UNet)."""
    device, dtype = encoder_hidden_states.device, unet.dtype
    batch = noised(scheduler, latents, generator, device)
    kwargs = {"added_cond_kwargs": added_cond_kwargs} if added_cond_kwargs else {}
    prediction = unet(batch.noisy.to(dtype), batch.timesteps, encoder_hidden_states.to(dtype), **kwargs).sample
    error = (prediction.float() - batch.target.float()) ** 2
    if weight is not None:
        error = error * weight.to(device=device, dtype=error.dtype)
    return error.mean()


def step_generator(seed: int, batch_number: int) -> torch.Generator:
    """The generator of one batch's draws (timesteps, noise, latent samples): a function of the training's seed
    and the batch's number since the start, so a resumed training repeats nothing and skips nothing."""
    return torch.Generator().manual_seed((seed * 1_000_003 + batch_number) % (2 ** 63))
