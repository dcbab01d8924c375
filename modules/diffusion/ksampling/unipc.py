"""A1111's UniPC sampler as a generator like those in timestep_algorithms.py: `eps = yield x, t_input`.

It follows A1111's `modules/models/diffusion/uni_pc/uni_pc.py` as `sd_samplers_timesteps_impl.unipc` runs it:
the multistep method on the data prediction (predict_x0, no thresholding), variants bh1, bh2 and vary_coeff,
skip types time_uniform, time_quadratic and logSNR, the model's discrete schedule read as a piecewise linear
log(alpha) over continuous time t in (0, 1] (NoiseScheduleVP 'discrete'). Every model call yields the latents and
A1111's model input time, (t - 1/1000) * 1000 as a 0-d float32 tensor; the answer is the guided noise prediction,
turned into the data prediction here as A1111's model_fn does. The arithmetic is A1111's, in the same order and
dtypes, on the latents' device.

Where A1111 stops, this goes on: A1111 asserts that there are at least `order` steps (a 1- or 2-step run at the
default order 3 fails); here the order is lowered to the number of steps. A1111's vary_coeff variant only runs on a
batch of one (its per-image factors broadcast over the image width); here each image of a batch gets what a batch of one
would.
"""
from __future__ import annotations

import torch

from modules.diffusion.ksampling.algorithms import Params, Sampling


def _expand(v: torch.Tensor, dims: int) -> torch.Tensor:
    """A per-image value shaped to multiply a batch of `dims` dimensions."""
    return v[(...,) + (None,) * (dims - 1)]


def _interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """The piecewise linear function through the keypoints (xp, yp), extended past both ends by the outermost
    segments. The segment is chosen where a sort of x together with the keypoints places x (so a tie with a
    keypoint falls on the side A1111's falls on); x: [N, C], xp and yp: [C, K]."""
    n, k = x.shape[0], xp.shape[1]
    joined = torch.cat([x.unsqueeze(2), xp.unsqueeze(0).repeat((n, 1, 1))], dim=2)
    rank = torch.argmin(torch.sort(joined, dim=2)[1], dim=2)      # how many keypoints sort before x
    low = (rank.clamp(1, k - 1) - 1).unsqueeze(2)
    xs, ys = xp.unsqueeze(0).expand(n, -1, -1), yp.unsqueeze(0).expand(n, -1, -1)
    x_lo, x_hi = torch.gather(xs, 2, low).squeeze(2), torch.gather(xs, 2, low + 1).squeeze(2)
    y_lo, y_hi = torch.gather(ys, 2, low).squeeze(2), torch.gather(ys, 2, low + 1).squeeze(2)
    return y_lo + (x - x_lo) * (y_hi - y_lo) / (x_hi - x_lo)


class _Schedule:
    """A discrete VP schedule in continuous time: step n of N sits at t = (n + 1) / N, log(alpha_t) is half the
    log of alphas_cumprod, linear in between (UniPC's NoiseScheduleVP('discrete'))."""

    def __init__(self, alphas_cumprod: torch.Tensor, device: torch.device):
        log_alphas = 0.5 * torch.log(alphas_cumprod.to(device))
        self.total_n = len(log_alphas)
        self.t_grid = torch.linspace(0., 1., self.total_n + 1)[1:].reshape((1, -1)).to(device)
        self.log_alpha_grid = log_alphas.reshape((1, -1))

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return _interpolate(t.reshape((-1, 1)), self.t_grid, self.log_alpha_grid).reshape((-1,))

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1. - torch.exp(2. * self.log_alpha(t)))

    def lam(self, t: torch.Tensor) -> torch.Tensor:
        """Half the log signal-to-noise ratio, log(alpha_t) - log(sigma_t)."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(1. - torch.exp(2. * log_alpha))

    def t_of_lam(self, lam: torch.Tensor) -> torch.Tensor:
        log_alpha = -0.5 * torch.logaddexp(torch.zeros((1,)).to(lam.device), -2. * lam)
        return _interpolate(log_alpha.reshape((-1, 1)), torch.flip(self.log_alpha_grid, [1]),
                            torch.flip(self.t_grid, [1])).reshape((-1,))


def _scalar(v) -> float:
    return v.item() if isinstance(v, torch.Tensor) else v


def _times(ns: _Schedule, skip_type: str, t_start, t_end: float, n: int, device) -> torch.Tensor:
    """The n + 1 times from t_start down to t_end (t_start a float, or a 0-d tensor for img2img)."""
    if skip_type == "logSNR":
        lam_start = ns.lam(t_start.clone() if isinstance(t_start, torch.Tensor) else torch.tensor(t_start).to(device))
        lam_end = ns.lam(torch.tensor(t_end).to(device))
        lams = torch.linspace(lam_start.cpu().item(), lam_end.cpu().item(), n + 1).to(device)
        return ns.t_of_lam(lams)
    if skip_type == "time_uniform":
        return torch.linspace(_scalar(t_start), t_end, n + 1).to(device)
    if skip_type == "time_quadratic":
        return torch.linspace(_scalar(t_start ** (1. / 2)), t_end ** (1. / 2), n + 1).pow(2).to(device)
    raise ValueError(f"unknown UniPC skip type {skip_type!r}: time_uniform, time_quadratic or logSNR")


def _data_prediction(ns: _Schedule, x: torch.Tensor, t: torch.Tensor):
    """One model call at time t (one value per image); its noise prediction turned into x0."""
    t_input = (t - 1. / ns.total_n) * 1000.
    eps = yield x, t_input[0].cpu()
    dims = x.dim()
    alpha_t, sigma_t = ns.alpha(t), ns.std(t)
    return (x - _expand(sigma_t, dims) * eps) / _expand(alpha_t, dims)


def _bh_update(ns: _Schedule, variant: str, x, model_prev_list, t_prev_list, t, order: int, use_corrector: bool):
    """One multistep step to t with the B(h) coefficients (bh1: B(h) = h, bh2: B(h) = e^h - 1): the predictor,
    and unless it is the last step the model call at the predicted point and the corrector that uses it."""
    dims = x.dim()
    t_prev_0, model_prev_0 = t_prev_list[-1], model_prev_list[-1]
    lam_prev_0, lam_t = ns.lam(t_prev_0), ns.lam(t)
    sigma_prev_0, sigma_t = ns.std(t_prev_0), ns.std(t)
    alpha_t = torch.exp(ns.log_alpha(t))
    h = lam_t - lam_prev_0

    rks, d1s = [], []
    for i in range(1, order):
        rk = ((ns.lam(t_prev_list[-(i + 1)]) - lam_prev_0) / h)[0]
        rks.append(rk)
        d1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
    rks.append(1.)
    rks = torch.tensor(rks, device=x.device)

    hh = -h[0]
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, b, factorial = [], [], 1
    for i in range(1, order + 1):
        rows.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r = torch.stack(rows)
    b = torch.tensor(b, device=x.device)

    d1s = torch.stack(d1s, dim=1) if d1s else None
    if d1s is not None:
        rhos_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1])
    if use_corrector:
        rhos_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(r, b)

    x_t_ = _expand(sigma_t / sigma_prev_0, dims) * x - _expand(alpha_t * h_phi_1, dims) * model_prev_0
    pred_res = torch.einsum("k,bkchw->bchw", rhos_p, d1s) if d1s is not None else 0
    x_t = x_t_ - _expand(alpha_t * b_h, dims) * pred_res
    model_t = None
    if use_corrector:
        model_t = yield from _data_prediction(ns, x_t, t)
        corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1s) if d1s is not None else 0
        d1_t = model_t - model_prev_0
        x_t = x_t_ - _expand(alpha_t * b_h, dims) * (corr_res + rhos_c[-1] * d1_t)
    return x_t, model_t


def _vary_coeff_update(ns: _Schedule, x, model_prev_list, t_prev_list, t, order: int, use_corrector: bool):
    """One multistep step with coefficients from the inverse of the Taylor matrix of the step ratios (A1111's
    vary_coeff, including its corrector's use of the next-to-last row for the newest difference)."""
    dims = x.dim()
    t_prev_0, model_prev_0 = t_prev_list[-1], model_prev_list[-1]
    lam_prev_0, lam_t = ns.lam(t_prev_0), ns.lam(t)
    sigma_prev_0, sigma_t = ns.std(t_prev_0), ns.std(t)
    alpha_t = torch.exp(ns.log_alpha(t))
    h = lam_t - lam_prev_0

    rks, d1s = [], []
    for i in range(1, order):
        rk = ((ns.lam(t_prev_list[-(i + 1)]) - lam_prev_0) / h)[:1]   # A1111 runs a batch of one
        rks.append(rk)
        d1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
    rks.append(1.)
    rks = torch.tensor(rks, device=x.device)

    size = len(rks)
    columns, col = [], torch.ones_like(rks)
    for k in range(1, size + 1):
        columns.append(col)
        col = col * rks / (k + 1)
    c = torch.stack(columns, dim=1)
    has_history = len(d1s) > 0
    if has_history:
        d1s = torch.stack(d1s, dim=1)
        a_p = torch.linalg.inv(c[:-1, :-1])
    if use_corrector:
        a_c = torch.linalg.inv(c)

    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_ks, factorial, h_phi_k = [], 1, h_phi_1
    for k in range(1, size + 2):
        h_phi_ks.append(h_phi_k)
        h_phi_k = h_phi_k / hh - 1 / factorial
        factorial *= k + 1

    x_t_ = _expand(sigma_t / sigma_prev_0, dims) * x - _expand(alpha_t * h_phi_1, dims) * model_prev_0
    x_t = x_t_
    if has_history:
        for k in range(size - 1):
            x_t = x_t - _expand(alpha_t * h_phi_ks[k + 1], dims) * torch.einsum("bkchw,k->bchw", d1s, a_p[k])
    model_t = None
    if use_corrector:
        model_t = yield from _data_prediction(ns, x_t, t)
        d1_t = model_t - model_prev_0
        x_t = x_t_
        row = max(size - 2, 0)   # the loop variable A1111 reads after its loop
        for k in range(size - 1):
            x_t = x_t - _expand(alpha_t * h_phi_ks[k + 1], dims) * torch.einsum("bkchw,k->bchw", d1s, a_c[k][:-1])
        x_t = x_t - _expand(alpha_t * h_phi_ks[size], dims) * (d1_t * a_c[row][-1])
    return x_t, model_t


def unipc(x, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, params: Params, *, variant: str = "bh1",
          skip_type: str = "time_uniform", order: int = 3, lower_order_final: bool = True,
          is_img2img: bool = False) -> Sampling:
    """A1111's UniPC over `len(timesteps)` steps from t = 1 (img2img: from just above the last of the given,
    sliced, timesteps) to t = 1/1000; as many model calls as steps. `alphas_cumprod` is the model's table as A1111
    holds it (float32); the model input time is yielded on the CPU, like DDIM's. `params` is unused (no noise)."""
    if variant not in ("bh1", "bh2", "vary_coeff"):
        raise ValueError(f"unknown UniPC variant {variant!r}: bh1, bh2 or vary_coeff")
    device = x.device
    ns = _Schedule(alphas_cumprod, device)
    steps = len(timesteps)
    order = min(order, steps)
    t_end = 1. / ns.total_n
    t_start = timesteps[-1].to(device) / 1000 + 1 / 1000 if is_img2img else 1.
    times = _times(ns, skip_type, t_start, t_end, steps, device)

    def update(x, t, step_order, use_corrector):
        if variant == "vary_coeff":
            return _vary_coeff_update(ns, x, model_prev_list, t_prev_list, t, step_order, use_corrector)
        return _bh_update(ns, variant, x, model_prev_list, t_prev_list, t, step_order, use_corrector)

    batch = x.shape[0]
    vec_t = times[0].expand(batch)
    model_prev_list = [(yield from _data_prediction(ns, x, vec_t))]
    t_prev_list = [vec_t]
    for init_order in range(1, order):   # the first steps at the orders the history allows
        vec_t = times[init_order].expand(batch)
        x, model_x = yield from update(x, vec_t, init_order, True)
        model_prev_list.append(model_x)
        t_prev_list.append(vec_t)
    for step in range(order, steps + 1):
        vec_t = times[step].expand(batch)
        step_order = min(order, steps + 1 - step) if lower_order_final else order
        x, model_x = yield from update(x, vec_t, step_order, step != steps)   # no corrector (call) at the end
        t_prev_list[:-1], model_prev_list[:-1] = t_prev_list[1:], model_prev_list[1:]
        t_prev_list[-1] = vec_t
        if step < steps:
            model_prev_list[-1] = model_x
    return x
