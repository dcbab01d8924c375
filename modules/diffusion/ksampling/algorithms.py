"""k-diffusion's samplers (and A1111's Restart and LCM) as generators.

Each sampler is a generator function `(x, sigmas, params) -> x`: every model evaluation is a
`denoised = yield x_in, sigma` (sigma a 0-d float32 tensor); the caller answers with the CFG-combined denoised
prediction. The arithmetic is k-diffusion's (`k_diffusion/sampling.py`, the commit A1111 v1.10 pins), in the same
order and dtypes, with A1111's `to_d`; noise comes from `params.randn_like` (A1111 routes k-diffusion's
`torch.randn_like` to the image generators) or `params.noise_sampler` (the Brownian tree of the SDE samplers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generator

import torch

Sampling = Generator[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]


@dataclass
class Params:
    """What a sampler takes besides x and the sigmas (A1111's extra_params_kwargs)."""

    randn_like: Callable[[torch.Tensor], torch.Tensor]
    noise_sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    eta: float = 1.0
    s_noise: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    solver_type: str = "midpoint"

    def noise(self, x: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if self.noise_sampler is not None:
            return self.noise_sampler
        return lambda sigma, sigma_next: self.randn_like(x)


def to_d(x, sigma, denoised):
    """The Karras ODE derivative (A1111's version: sigma is a scalar tensor)."""
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def _churned(x, sigmas, i, params: Params):
    """Karras's "churn": the noise level raised before the step (draws noise every step, as k-diffusion does)."""
    gamma = min(params.s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if params.s_tmin <= sigmas[i] <= params.s_tmax \
        else 0.0
    eps = params.randn_like(x) * params.s_noise
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


def euler(x, sigmas, params: Params) -> Sampling:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churned(x, sigmas, i, params)
        denoised = yield x, sigma_hat
        d = to_d(x, sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


def euler_ancestral(x, sigmas, params: Params) -> Sampling:
    noise = params.noise(x)
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=params.eta)
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * params.s_noise * sigma_up
    return x


def heun(x, sigmas, params: Params) -> Sampling:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churned(x, sigmas, i, params)
        denoised = yield x, sigma_hat
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = yield x_2, sigmas[i + 1]
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


def dpm_2(x, sigmas, params: Params) -> Sampling:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churned(x, sigmas, i, params)
        denoised = yield x, sigma_hat
        d = to_d(x, sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            denoised_2 = yield x_2, sigma_mid
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


def dpm_2_ancestral(x, sigmas, params: Params) -> Sampling:
    noise = params.noise(x)
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=params.eta)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            denoised_2 = yield x_2, sigma_mid
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise(sigmas[i], sigmas[i + 1]) * params.s_noise * sigma_up
    return x


def _linear_multistep_coeff(order, t, i, j):
    from scipy import integrate   # imported on LMS's first use: scipy is slow to import at start-up

    def fn(tau):
        prod = 1.0
        for k in range(order):
            if j != k:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod
    return integrate.quad(fn, t[i], t[i + 1], epsrel=1e-4)[0]


def lms(x, sigmas, params: Params, order: int = 4) -> Sampling:
    sigmas_cpu = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        cur_order = min(i + 1, order)
        coeffs = [_linear_multistep_coeff(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
        x = x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds)))
    return x


def _sigma_fn(t):
    return t.neg().exp()


def _t_fn(sigma):
    return sigma.log().neg()


def dpmpp_2s_ancestral(x, sigmas, params: Params) -> Sampling:
    noise = params.noise(x)
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=params.eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t_fn(sigmas[i]), _t_fn(sigma_down)
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_2 = (_sigma_fn(s) / _sigma_fn(t)) * x - (-h * r).expm1() * denoised
            denoised_2 = yield x_2, _sigma_fn(s)
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * params.s_noise * sigma_up
    return x


def dpmpp_sde(x, sigmas, params: Params, r: float = 1 / 2) -> Sampling:
    noise = params.noise(x)
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        else:
            t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
            h = t_next - t
            s = t + h * r
            fac = 1 / (2 * r)
            sd, su = get_ancestral_step(_sigma_fn(t), _sigma_fn(s), params.eta)
            s_ = _t_fn(sd)
            x_2 = (_sigma_fn(s_) / _sigma_fn(t)) * x - (t - s_).expm1() * denoised
            x_2 = x_2 + noise(_sigma_fn(t), _sigma_fn(s)) * params.s_noise * su
            denoised_2 = yield x_2, _sigma_fn(s)
            sd, su = get_ancestral_step(_sigma_fn(t), _sigma_fn(t_next), params.eta)
            t_next_ = _t_fn(sd)
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            x = (_sigma_fn(t_next_) / _sigma_fn(t)) * x - (t - t_next_).expm1() * denoised_d
            x = x + noise(_sigma_fn(t), _sigma_fn(t_next)) * params.s_noise * su
    return x


def dpmpp_2m(x, sigmas, params: Params) -> Sampling:
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            h_last = t - _t_fn(sigmas[i - 1])
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def dpmpp_2m_sde(x, sigmas, params: Params) -> Sampling:
    if params.solver_type not in ("heun", "midpoint"):
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    noise = params.noise(x)
    eta = params.eta
    old_denoised, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if params.solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() \
                    * params.s_noise
        old_denoised = denoised
        h_last = h
    return x


def dpmpp_3m_sde(x, sigmas, params: Params) -> Sampling:
    noise = params.noise(x)
    eta = params.eta
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * d
            if eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() \
                    * params.s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """k-diffusion's get_sigmas_karras (here for Restart, which builds its own Karras schedules)."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def restart(x, sigmas, params: Params) -> Sampling:
    """A1111's Restart sampler (`sd_samplers_extra.restart_sampler`, Xu et al. 2023), with its automatic
    restart list: Heun steps, and from 20 steps on one or two jumps back up to sigma 2 around sigma 0.1."""
    steps = sigmas.shape[0] - 1
    restart_list: dict = {}
    if steps >= 20:
        restart_steps, restart_times = 9, 1
        if steps >= 36:
            restart_steps, restart_times = steps // 4, 2
        sigmas = karras_sigmas(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
        restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
    restart_list = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_list:
            restart_steps, restart_times, restart_max = restart_list[i + 1]
            min_idx = i + 1
            max_idx = int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                sigma_restart = karras_sigmas(restart_steps, sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
                for _ in range(restart_times):
                    step_list.extend(zip(sigma_restart[:-1], sigma_restart[1:]))
    last_sigma = None
    for old_sigma, new_sigma in step_list:
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + params.randn_like(x) * params.s_noise * (old_sigma ** 2 - last_sigma ** 2) ** 0.5
        denoised = yield x, old_sigma
        d = to_d(x, old_sigma, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = yield x_2, new_sigma
            d_2 = to_d(x_2, new_sigma, denoised_2)
            x = x + (d + d_2) / 2 * dt
        last_sigma = new_sigma
    return x


def lcm(x, sigmas, params: Params) -> Sampling:
    """A1111's LCM sampler (`sd_samplers_lcm.sample_lcm`): jump to the prediction, noise it to the next level."""
    noise = params.noise(x)
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        x = denoised
        if sigmas[i + 1] > 0:
            x += sigmas[i + 1] * noise(sigmas[i], sigmas[i + 1])
    return x


def sigma_bounds(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Brownian tree's interval, as k-diffusion takes it from the schedule."""
    return sigmas[sigmas > 0].min(), sigmas.max()


ALGORITHMS: dict[str, Callable[..., Sampling]] = {
    "euler": euler, "euler_ancestral": euler_ancestral, "heun": heun, "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral, "lms": lms, "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
    "dpmpp_sde": dpmpp_sde, "dpmpp_2m": dpmpp_2m, "dpmpp_2m_sde": dpmpp_2m_sde, "dpmpp_3m_sde": dpmpp_3m_sde,
    "restart": restart, "lcm": lcm,
}
