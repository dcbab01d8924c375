"""A model's noise levels and A1111's schedule types.

`Denoiser` is k-diffusion's discrete-schedule denoiser over a checkpoint's `alphas_cumprod` (taken from the file
when it stores them, as A1111 does): sigmas, sigma ↔ timestep (fractional, log-sigma interpolation), and how the
UNet's output becomes the denoised prediction for an eps- or v-prediction model. `LCMDenoiser` is A1111's LCM
variant (50 of the 1000 levels, consistency-model output scaling). `schedule_sigmas` builds the sigmas of each A1111
schedule type (`modules/sd_schedulers.py`) as A1111's `get_sigmas` does, options included.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


class Denoiser:
    """k-diffusion's DiscreteEpsDDPMDenoiser / DiscreteVDDPMDenoiser, without the model: the caller runs the
    UNet on `model_input(x, sigma)` and hands its output to `denoised`."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction: str = "epsilon"):
        self.alphas_cumprod = alphas_cumprod.float().cpu()
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()
        self.prediction = prediction

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def get_sigmas(self, n: int) -> torch.Tensor:
        t_max = len(self.sigmas) - 1
        return append_zero(self.t_to_sigma(torch.linspace(t_max, 0, n)))

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas.to(sigma.device)[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        log_sigmas = self.log_sigmas.to(sigma.device)
        low, high = log_sigmas[low_idx], log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigmas = self.log_sigmas.to(t.device)
        return ((1 - w) * log_sigmas[low_idx] + w * log_sigmas[high_idx]).exp()

    # -- the UNet call around a noise level

    def model_input(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The UNet's input and timestep for latents `x` at noise level `sigma` (0-d)."""
        sigma = sigma.to(x.device)
        c_in = 1 / (sigma ** 2 + 1) ** 0.5
        return x * c_in, self.sigma_to_t(sigma.reshape(1)).reshape(())

    def answer(self, output: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The denoised prediction from the UNet's (guided) output at `sigma`."""
        sigma = sigma.to(x.device)
        if self.prediction == "v_prediction":
            c_skip = 1 / (sigma ** 2 + 1)
            c_out = -sigma / (sigma ** 2 + 1) ** 0.5
            return output * c_out + x * c_skip
        return x + output * -sigma


class LCMDenoiser(Denoiser):
    """A1111's LCMCompVisDenoiser: the 50 levels of the LCM grid (every 20th timestep from 999 down), timesteps
    given on the 0..999 scale, and the consistency model's boundary scaling of the prediction."""

    timesteps, original_steps = 1000, 50

    def __init__(self, alphas_cumprod: torch.Tensor, prediction: str = "epsilon"):
        self.skip_steps = self.timesteps // self.original_steps
        full = alphas_cumprod.float().cpu()
        valid = torch.zeros(self.original_steps, dtype=torch.float32)
        for x in range(self.original_steps):
            valid[self.original_steps - 1 - x] = full[self.timesteps - 1 - x * self.skip_steps]
        super().__init__(valid, prediction)

    def get_sigmas(self, n: int) -> torch.Tensor:
        start = self.sigma_to_t(self.sigma_max)
        end = self.sigma_to_t(self.sigma_min)
        return append_zero(self.t_to_sigma(torch.linspace(start, end, n)))

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.log() - self.log_sigmas.to(sigma.device)[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        index = torch.clamp(((t - (self.skip_steps - 1)) / self.skip_steps).float(), min=0,
                            max=(len(self.sigmas) - 1))
        return super().t_to_sigma(index)

    def answer(self, output: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The denoised prediction from the UNet's (guided) output at `sigma`."""
        sigma = sigma.to(x.device)
        predicted = x + output * -sigma
        scaled_timestep = self.sigma_to_t(sigma.reshape(1)).reshape(()) * 10.0
        c_skip = 0.25 / (scaled_timestep ** 2 + 0.25)
        c_out = scaled_timestep / (scaled_timestep ** 2 + 0.25) ** 0.5
        return c_out * predicted + c_skip * x


# ---------------------------------------------------------------- A1111's schedule types


def karras(n, sigma_min, sigma_max, rho=7.0, **_):
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(n, sigma_min, sigma_max, **_):
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential(n, sigma_min, sigma_max, rho=1.0, **_):
    ramp = torch.linspace(1, 0, n) ** rho
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def uniform(n, denoiser: Denoiser, **_):
    return denoiser.get_sigmas(n)


def sgm_uniform(n, sigma_min, sigma_max, denoiser: Denoiser, **_):
    start = denoiser.sigma_to_t(torch.tensor(sigma_max))
    end = denoiser.sigma_to_t(torch.tensor(sigma_min))
    sigs = [denoiser.t_to_sigma(ts) for ts in torch.linspace(start, end, n + 1)[:-1]]
    return torch.FloatTensor(sigs + [0.0])


def kl_optimal(n, sigma_min, sigma_max, **_):
    alpha_min = torch.arctan(torch.tensor(sigma_min))
    alpha_max = torch.arctan(torch.tensor(sigma_max))
    step_indices = torch.arange(n + 1)
    return torch.tan(step_indices / n * alpha_min + (1.0 - step_indices / n) * alpha_max)


# A1111's "Align Your Steps" tables (NVIDIA's published 10-step sigmas for SD 1.5 and SDXL).
_AYS_SD15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
_AYS_SDXL = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]


def align_your_steps(n, xl=False, **_):
    sigmas = list(_AYS_SDXL if xl else _AYS_SD15)
    if n != len(sigmas):   # log-linear interpolation of the decreasing table to n points
        xs = np.linspace(0, 1, len(sigmas))
        ys = np.log(sigmas[::-1])
        new_ys = np.interp(np.linspace(0, 1, n), xs, ys)
        sigmas = np.append(np.exp(new_ys)[::-1].copy(), [0.0])
    else:
        sigmas.append(0.0)
    return torch.FloatTensor(sigmas)


def simple(n, denoiser: Denoiser, **_):
    ss = len(denoiser.sigmas) / n
    sigs = [float(denoiser.sigmas[-(1 + int(x * ss))]) for x in range(n)]
    return torch.FloatTensor(sigs + [0.0])


def normal(n, sigma_min, sigma_max, denoiser: Denoiser, **_):
    start = denoiser.sigma_to_t(torch.tensor(sigma_max))
    end = denoiser.sigma_to_t(torch.tensor(sigma_min))
    sigs = [denoiser.t_to_sigma(ts) for ts in torch.linspace(start, end, n)]
    return torch.FloatTensor(sigs + [0.0])


def ddim_uniform(n, denoiser: Denoiser, **_):
    ss = max(len(denoiser.sigmas) // n, 1)
    sigs = [float(denoiser.sigmas[x]) for x in range(1, len(denoiser.sigmas), ss)]
    return torch.FloatTensor(sigs[::-1] + [0.0])


def beta(n, sigma_min, sigma_max, beta_alpha=0.6, beta_beta=0.6, **_):
    from scipy import stats

    timesteps = [stats.beta.ppf(x, beta_alpha, beta_beta) for x in 1 - np.linspace(0, 1, n)]
    return torch.FloatTensor([sigma_min + (x * (sigma_max - sigma_min)) for x in timesteps] + [0.0])


SCHEDULE_FUNCTIONS = {
    "uniform": uniform, "karras": karras, "exponential": exponential, "polyexponential": polyexponential,
    "sgm_uniform": sgm_uniform, "kl_optimal": kl_optimal, "align_your_steps": align_your_steps, "simple": simple,
    "normal": normal, "ddim": ddim_uniform, "beta": beta,
}
