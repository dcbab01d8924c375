"""k-diffusion's DPM-Solver samplers, "DPM fast" (fixed steps) and "DPM adaptive" (step size by error control),
as generators like those in algorithms.py: `denoised = yield x, sigma` for each model evaluation.

They take the noise range rather than a schedule: A1111 passes the model's sigma_min and sigma_max (txt2img) or
the img2img tail's first and next-to-last sigma, and for "DPM fast" the number of steps. "DPM adaptive" decides
its own number of model calls.
"""
from __future__ import annotations

import math

import torch

from modules.diffusion.ksampling.algorithms import Params, Sampling, get_ancestral_step


def _t(sigma):
    return -sigma.log()


def _sigma(t):
    return t.neg().exp()


def _eps(cache: dict, key: str, x, t):
    if key not in cache:
        denoised = yield x, _sigma(t)
        cache[key] = (x - denoised) / _sigma(t)
    return cache[key]


def _step_1(x, t, t_next, cache):
    h = t_next - t
    eps = yield from _eps(cache, "eps", x, t)
    return x - _sigma(t_next) * h.expm1() * eps


def _step_2(x, t, t_next, cache, r1=1 / 2):
    h = t_next - t
    eps = yield from _eps(cache, "eps", x, t)
    s1 = t + r1 * h
    u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
    eps_r1 = yield from _eps(cache, "eps_r1", u1, s1)
    return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)


def _step_3(x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
    h = t_next - t
    eps = yield from _eps(cache, "eps", x, t)
    s1 = t + r1 * h
    s2 = t + r2 * h
    u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
    eps_r1 = yield from _eps(cache, "eps_r1", u1, s1)
    u2 = x - _sigma(s2) * (r2 * h).expm1() * eps - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) \
        * (eps_r1 - eps)
    eps_r2 = yield from _eps(cache, "eps_r2", u2, s2)
    return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)


def dpm_fast(x, sigma_min: float, sigma_max: float, n: int, params: Params) -> Sampling:
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    noise = params.noise(x)
    eta = params.eta
    t_start, t_end = _t(torch.tensor(sigma_max)), _t(torch.tensor(sigma_min))
    m = math.floor(n / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for i, order in enumerate(orders):
        cache: dict = {}
        t, t_next = ts[i], ts[i + 1]
        if eta:
            sd, su = get_ancestral_step(_sigma(t), _sigma(t_next), eta)
            t_next_ = torch.minimum(t_end, _t(sd))
            su = (_sigma(t_next) ** 2 - _sigma(t_next_) ** 2) ** 0.5
        else:
            t_next_, su = t_next, 0.0
        yield from _eps(cache, "eps", x, t)
        step = {1: _step_1, 2: _step_2, 3: _step_3}[order]
        x = yield from step(x, t, t_next_, cache)
        x = x + su * params.s_noise * noise(_sigma(t), _sigma(t_next))
    return x


class _StepSizeController:
    """k-diffusion's PID controller for the adaptive step size (its defaults: integral control only)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order, accept_safety, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


def dpm_adaptive(x, sigma_min: float, sigma_max: float, params: Params, order=3, rtol=0.05, atol=0.0078,
                 h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81) -> Sampling:
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    noise = params.noise(x)
    eta = params.eta
    t_start, t_end = _t(torch.tensor(sigma_max)), _t(torch.tensor(sigma_min))
    forward = t_end > t_start
    if not forward and eta:
        raise ValueError("eta must be 0 for reverse sampling")
    h_init = abs(h_init) * (1 if forward else -1)
    atol, rtol = torch.tensor(atol), torch.tensor(rtol)
    s = t_start
    x_prev = x
    pid = _StepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
        cache: dict = {}
        t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
        if eta:
            sd, su = get_ancestral_step(_sigma(s), _sigma(t), eta)
            t_ = torch.minimum(t_end, _t(sd))
            su = (_sigma(t) ** 2 - _sigma(t_) ** 2) ** 0.5
        else:
            t_, su = t, 0.0
        yield from _eps(cache, "eps", x, s)
        if order == 2:
            x_low = yield from _step_1(x, s, t_, cache)
            x_high = yield from _step_2(x, s, t_, cache)
        else:
            x_low = yield from _step_2(x, s, t_, cache, r1=1 / 3)
            x_high = yield from _step_3(x, s, t_, cache)
        delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high + su * params.s_noise * noise(_sigma(s), _sigma(t))
            s = t
    return x
