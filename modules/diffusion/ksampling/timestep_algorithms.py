"""A1111's timestep samplers (`sd_samplers_timesteps.py` / `_impl.py`): DDIM, DDIM CFG++ and PLMS, as generators
that yield `(x, timestep)` and receive the guided noise prediction (eps).

A1111 runs them on its own timesteps: 1, 1 + 1000 // steps, … (at most 999), one model call fewer than there are
timesteps, ending at alphas_cumprod[1] rather than at 0; an img2img pass noises the image to the level of the
timestep just above the ones it runs. The noise generator is drawn once per step even at eta 0, as A1111 does.
"""
from __future__ import annotations

import numpy as np
import torch

from modules.diffusion.ksampling.algorithms import Params, Sampling


class TimestepDenoiser:
    """The UNet call of a timestep sampler: the latents unscaled, the timestep as given; v-prediction output
    turned into eps (A1111's CompVisTimestepsVDenoiser)."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction: str = "epsilon"):
        self.alphas_cumprod = alphas_cumprod.float().cpu()
        self.prediction = prediction

    def model_input(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, t

    def eps(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction != "v_prediction":
            return output
        index = int(t)
        alphas = self.alphas_cumprod.to(x.device)
        return torch.sqrt(alphas)[index] * output + torch.sqrt(1 - alphas)[index] * x

    answer = eps


def a1111_timesteps(steps: int) -> torch.Tensor:
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def noised_to(x: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, timestep: int) -> torch.Tensor:
    """An img2img start: the image noised to `timestep`'s level (A1111's sample_img2img)."""
    alpha = alphas_cumprod[timestep].to(x.device)
    return x * torch.sqrt(alpha) + noise * torch.sqrt(1 - alpha)


class _Tables:
    """alphas at each timestep and at the one before it (alphas_cumprod[0] before the first), as A1111 indexes."""

    def __init__(self, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float = 0.0):
        self.alphas = alphas_cumprod[timesteps]
        self.alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
        self.sqrt_one_minus_alphas = torch.sqrt(1 - self.alphas)
        # A1111's expression as it evaluates it, a mix of numpy (float64) and torch (1 - alpha in float32).
        a_prev = self.alphas_prev.numpy()
        self.sigmas = eta * np.sqrt((1 - a_prev) / (1 - self.alphas) * (1 - self.alphas / a_prev))


def _level(value: float, x: torch.Tensor) -> torch.Tensor:
    return value * x.new_ones((x.shape[0], 1, 1, 1))


def _t(timesteps: torch.Tensor, index: int) -> torch.Tensor:
    return torch.tensor(float(timesteps[index].item()))


def ddim(x, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, params: Params, guidance=None) -> Sampling:
    """A1111's DDIM; with `guidance` its DDIM CFG++ variant: `guidance(x, t)` gives the last call's prediction
    guided at 1/12.5 of the CFG scale and the unguided one, along which the step points back."""
    tables = _Tables(alphas_cumprod, timesteps, params.eta)
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = yield x, _t(timesteps, index)
        direction_eps = e_t
        if guidance is not None:
            e_t, direction_eps = guidance(x, _t(timesteps, index))
        a_t = _level(tables.alphas[index].item(), x)
        a_prev = _level(tables.alphas_prev[index].item(), x)
        sigma_t = _level(tables.sigmas[index].item(), x)
        sqrt_one_minus_at = _level(tables.sqrt_one_minus_alphas[index].item(), x)
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1. - a_prev - sigma_t ** 2).sqrt() * direction_eps
        noise = sigma_t * params.randn_like(x)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
    return x


def plms(x, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, params: Params) -> Sampling:
    tables = _Tables(alphas_cumprod, timesteps)
    old_eps: list[torch.Tensor] = []

    def x_prev_of(x, e_t, index):
        a_t = _level(tables.alphas[index].item(), x)
        a_prev = _level(tables.alphas_prev[index].item(), x)
        sqrt_one_minus_at = _level(tables.sqrt_one_minus_alphas[index].item(), x)
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1. - a_prev).sqrt() * e_t

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = yield x, _t(timesteps, index)
        if not old_eps:   # pseudo improved Euler (2nd order): one more call at the next timestep
            e_t_next = yield x_prev_of(x, e_t, index), _t(timesteps, max(index - 1, 0))
            e_t_prime = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x_prev = x_prev_of(x, e_t_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
        x = x_prev
    return x
