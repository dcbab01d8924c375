"""The project's A1111 samplers (modules/diffusion/ksampling) against k-diffusion itself, the library A1111 samples
with: the same latents, bit for bit, for every k-diffusion sampler, several step counts, churn and eta; the same
noise levels for the model's sigmas and A1111's schedule types; and DDIM against diffusers' DDIMScheduler run on
A1111's timesteps. The model is a fixed smooth function standing in for a UNet, so a mismatch is the sampler's."""
from __future__ import annotations

import pytest
import torch

from modules.diffusion.ksampling import algorithms, dpm_solver, schedules, timestep_algorithms
from tests.fixtures import kdiffusion_reference as reference
from tests.fixtures.sampler_cases import sd_alphas_cumprod

K, EXTERNAL = reference.load()
ALPHAS = sd_alphas_cumprod()


class _Inner(torch.nn.Module):
    """A CompVis-style model (apply_model) predicting eps from a fixed function of x and t."""

    def __init__(self, v: bool = False):
        super().__init__()
        self.alphas_cumprod = ALPHAS
        self.v = v

    def apply_model(self, x, t, cond=None):
        return 0.5 * torch.tanh(x) * (t.reshape(-1, 1, 1, 1) / 1000) + 0.1 * x * (-1 if self.v else 1)


def _models(v: bool = False):
    """(k-diffusion's denoiser around the model, our answer function around the same model)."""
    inner = _Inner(v)
    theirs = (EXTERNAL.CompVisVDenoiser if v else EXTERNAL.CompVisDenoiser)(inner)
    ours = schedules.Denoiser(ALPHAS, "v_prediction" if v else "epsilon")

    def answer(x, sigma):
        model_input, t = ours.model_input(x, sigma)
        return ours.answer(inner.apply_model(model_input, t.reshape(1).expand(x.shape[0])), x, sigma)

    return (lambda x, sigma, **_: theirs(x, sigma, cond=None)), answer, theirs


def _draws(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return lambda x: torch.randn(x.shape, generator=generator)


X0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
SIGMA_SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral",
                  "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde"]


@pytest.mark.parametrize("steps", [2, 5, 12, 30])
@pytest.mark.parametrize("name", SIGMA_SAMPLERS)
@pytest.mark.parametrize("v", [False, True], ids=["eps", "v"])
def test_k_diffusion_samplers_give_k_diffusions_latents(name, steps, v):
    theirs_model, our_answer, theirs = _models(v)
    sigmas = K.get_sigmas_karras(steps, theirs.sigmas[0].item(), theirs.sigmas[-1].item())
    x = X0 * sigmas[0]
    extra = {}
    if name in ("euler", "heun", "dpm_2"):
        extra = {"s_churn": 1.5}   # churn draws noise; 0 still draws each step, as k-diffusion does
    if name in ("euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"):
        extra = {"eta": 0.7, "s_noise": 0.9}
    brownian = name in ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde")

    def run_theirs():
        kwargs = dict(extra)
        if brownian:
            draw = _draws(5)
            kwargs["noise_sampler"] = lambda sigma, sigma_next: draw(x)
        return reference.run_with_noise(K, _draws(1), getattr(K, f"sample_{name}"), theirs_model, x.clone(),
                                        sigmas, disable=True, **kwargs)

    params = algorithms.Params(randn_like=_draws(1), **extra)
    if brownian:
        draw = _draws(5)
        params.noise_sampler = lambda sigma, sigma_next: draw(x)
    ours = reference.drive(algorithms.ALGORITHMS[name](x.clone(), sigmas, params), our_answer)
    assert torch.equal(ours, run_theirs())


def test_dpm_2m_sde_heun_solver_type():
    theirs_model, our_answer, theirs = _models()
    sigmas = K.get_sigmas_exponential(8, theirs.sigmas[0].item(), theirs.sigmas[-1].item())
    draw_a, draw_b = _draws(3), _draws(3)
    expected = K.sample_dpmpp_2m_sde(theirs_model, X0 * sigmas[0], sigmas, disable=True, solver_type="heun",
                                     noise_sampler=lambda s, n: draw_a(X0))
    params = algorithms.Params(randn_like=_draws(1), solver_type="heun", noise_sampler=lambda s, n: draw_b(X0))
    assert torch.equal(reference.drive(algorithms.dpmpp_2m_sde(X0 * sigmas[0], sigmas, params), our_answer),
                       expected)


@pytest.mark.parametrize("steps", [1, 4, 9, 20])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_fast_and_adaptive_give_k_diffusions_latents(steps, eta):
    theirs_model, our_answer, theirs = _models()
    low, high = theirs.sigmas[0].item(), theirs.sigmas[-1].item()
    x = X0 * high
    expected = reference.run_with_noise(K, _draws(2), K.sample_dpm_fast, theirs_model, x.clone(), low, high, steps,
                                        disable=True, eta=eta)
    ours = reference.drive(dpm_solver.dpm_fast(x.clone(), low, high, steps, algorithms.Params(_draws(2), eta=eta)),
                           our_answer)
    assert torch.equal(ours, expected)
    if steps == 4:   # adaptive takes no step count
        expected = reference.run_with_noise(K, _draws(2), K.sample_dpm_adaptive, theirs_model, x.clone(), low,
                                            high, disable=True, eta=eta)
        ours = reference.drive(dpm_solver.dpm_adaptive(x.clone(), low, high, algorithms.Params(_draws(2), eta=eta)),
                               our_answer)
        assert torch.equal(ours, expected)


@pytest.mark.parametrize("steps", [1, 2, 7, 20, 40])
def test_model_sigmas_and_timesteps_are_k_diffusions(steps):
    _, _, theirs = _models()
    ours = schedules.Denoiser(ALPHAS)
    assert torch.equal(ours.sigmas, theirs.sigmas)
    assert torch.equal(ours.get_sigmas(steps), theirs.get_sigmas(steps))
    sigma = torch.tensor([14.0, 3.3, 0.5, 0.03])
    assert torch.equal(ours.sigma_to_t(sigma), theirs.sigma_to_t(sigma))
    t = torch.tensor([999.0, 500.5, 12.25, 0.0])
    assert torch.equal(ours.t_to_sigma(t), theirs.t_to_sigma(t))
    low, high = theirs.sigmas[0].item(), theirs.sigmas[-1].item()
    assert torch.equal(schedules.karras(steps, low, high), K.get_sigmas_karras(steps, low, high))
    assert torch.equal(schedules.exponential(steps, low, high), K.get_sigmas_exponential(steps, low, high))
    assert torch.equal(schedules.polyexponential(steps, low, high, rho=1.3),
                       K.get_sigmas_polyexponential(steps, low, high, rho=1.3))


def test_a1111_schedule_types_have_a1111s_values():
    """A1111's sd_schedulers.py functions, checked on values computed from its formulas."""
    den = schedules.Denoiser(ALPHAS)
    low, high = den.sigmas[0].item(), den.sigmas[-1].item()
    # SGM Uniform: n points of t from sigma_max's t to sigma_min's, the last dropped, then 0.
    sgm = schedules.sgm_uniform(4, low, high, den)
    t = torch.linspace(den.sigma_to_t(torch.tensor(high)), den.sigma_to_t(torch.tensor(low)), 5)[:-1]
    assert torch.allclose(sgm[:-1], den.t_to_sigma(t)) and sgm[-1] == 0
    # Simple: every len/n-th of the model's sigmas from the top.
    assert schedules.simple(4, den)[:-1].tolist() == [den.sigmas[-1 - int(x * 250)].item() for x in range(4)]
    # DDIM: the sigmas at 1, 1 + 1000 // n, ... from the top.
    assert schedules.ddim_uniform(4, den)[:-1].tolist() == [den.sigmas[i].item() for i in (751, 501, 251, 1)]
    # KL Optimal ends at sigma_min, not 0; Align Your Steps's 10-step table is NVIDIA's.
    assert schedules.kl_optimal(5, low, high)[-1].item() == pytest.approx(low)
    assert schedules.align_your_steps(11)[:-1].tolist() == pytest.approx(
        [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029], rel=1e-5)
    beta = schedules.beta(5, low, high)
    assert beta[0].item() == pytest.approx(high) and beta[-2].item() == pytest.approx(low) and beta[-1] == 0


@pytest.mark.parametrize("steps", [5, 10, 20, 30])
def test_ddim_is_diffusers_ddim_on_a1111s_timesteps(steps):
    """A1111's DDIM makes one call fewer than it has timesteps (1, 1 + 1000 // steps, ...): the same updates as
    diffusers' DDIMScheduler over those timesteps, stopping at timestep 1."""
    from diffusers import DDIMScheduler

    inner = _Inner()
    timesteps = timestep_algorithms.a1111_timesteps(steps)
    x = X0.clone()
    ours = reference.drive(timestep_algorithms.ddim(x, timesteps, ALPHAS, algorithms.Params(_draws(1), eta=0.0)),
                           lambda latents, t: inner.apply_model(latents, t.reshape(1)))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    scheduler.alphas_cumprod = ALPHAS   # LDM's float64-computed schedule, as A1111 and the project use
    scheduler.num_inference_steps = steps   # its previous timestep is t - 1000 // steps, as A1111's
    theirs = x.clone()
    for index in range(len(timesteps) - 1, 0, -1):
        t = int(timesteps[index])
        eps = inner.apply_model(theirs, torch.tensor([float(t)]))
        theirs = scheduler.step(eps, t, theirs, eta=0.0).prev_sample
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_img2img_steps_are_a1111s():
    from modules.diffusion.ksampling.plan import img2img_steps

    # (schedule length, t_enc): the pass runs t_enc + 1 steps of the schedule's tail
    assert img2img_steps(20, 0.75, exact=False) == (20, 15)   # 16 steps, one more than int(20 * 0.75)
    assert img2img_steps(20, 1.0, exact=False) == (20, 19)    # strength 1 still starts from the image
    assert img2img_steps(20, 0.0, exact=False) == (20, 0)
    assert img2img_steps(20, 0.75, exact=True) == (26, 19)    # hires / img2img_fix_steps: exactly 20 steps
    assert img2img_steps(10, 0.3, exact=True) == (33, 9)
