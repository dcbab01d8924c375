"""The schedulers the samplers build, at work: their sigmas and DPM++ steps against k-diffusion's (A1111's), and
real denoising loops on a tiny random pipeline."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modules.diffusion import samplers
from tests.fixtures.scheduler_configs import BASE_CONFIG, PAIRS, V_CONFIG, ZSNR_CONFIG, expected_evaluations


# ---------------------------------------------------------------- parity with k-diffusion


def _model_sigmas() -> np.ndarray:
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def _kdiffusion_sigmas(schedule: str, n: int) -> np.ndarray:
    """A1111's sd_schedulers / k-diffusion get_sigmas_* for SD1.x, float64."""
    model = _model_sigmas()
    s_min, s_max = model[0], model[-1]
    if schedule in ("Uniform", "Normal"):  # DiscreteSchedule.get_sigmas: log-sigma interpolation at t
        t = np.linspace(999, 0, n)
        sigmas = np.exp(np.interp(t, np.arange(1000), np.log(model)))
    elif schedule == "SGM Uniform":
        t = np.linspace(999, 0, n + 1)[:-1]
        sigmas = np.exp(np.interp(t, np.arange(1000), np.log(model)))
    elif schedule == "Karras":
        ramp = np.linspace(0, 1, n)
        sigmas = (s_max ** (1 / 7) + ramp * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
    elif schedule in ("Exponential", "Polyexponential"):
        sigmas = np.exp(np.linspace(math.log(s_max), math.log(s_min), n))
    elif schedule == "Beta":
        from scipy import stats
        sigmas = s_min + stats.beta.ppf(1 - np.linspace(0, 1, n), 0.6, 0.6) * (s_max - s_min)
    else:
        raise AssertionError(schedule)
    return np.append(sigmas, 0.0)


# SGM Uniform: diffusers' "trailing" is within one timestep of A1111's linspace(999, 0, n + 1)[:-1].
@pytest.mark.parametrize("name, schedule, rtol", [
    ("Euler", "Uniform", 2e-3), ("Euler", "Normal", 2e-3), ("Euler", "SGM Uniform", 1.5e-2),
    ("Euler", "Karras", 1e-4), ("Euler", "Exponential", 1e-4), ("Euler", "Beta", 1e-4),
    ("LMS", "Karras", 1e-4), ("Euler a", "Uniform", 2e-3),
    ("DPM++ 2M", "Automatic", 1e-4), ("DPM++ 2M SDE", "Automatic", 1e-4), ("DPM++ 2M", "Beta", 1e-4),
    ("DPM++ 2M", "Polyexponential", 1e-4), ("DPM++ 2M", "SGM Uniform", 1.5e-2),
])
def test_sigmas_match_a1111(name, schedule, rtol):
    steps = 12
    scheduler = samplers.create_scheduler(name, schedule, BASE_CONFIG)
    scheduler.set_timesteps(steps)
    expected = _kdiffusion_sigmas(samplers.effective_schedule(name, schedule), steps)
    np.testing.assert_allclose(scheduler.sigmas.double().numpy(), expected, rtol=rtol, atol=1e-6)


def _toy_denoiser(mu: torch.Tensor, a: float = 0.5):
    """A smooth, nonlinear stand-in for a model's denoised prediction (Gaussian posterior mean + a bend), so
    that the higher-order terms of the solvers are exercised (for Gaussian data alone the noise-free SDE
    steps keep the prediction constant)."""
    def denoise(x, sigma):
        return (a * a * x + sigma * sigma * mu) / (a * a + sigma * sigma) + 0.5 * torch.sin(x / (1 + sigma))
    return denoise


def _run_diffusers(scheduler, denoise, x_ve: torch.Tensor) -> torch.Tensor:
    """Drive a VP-space diffusers scheduler with an epsilon model wrapping a VE-space denoiser, no noise."""
    sigmas = scheduler.sigmas.double()
    sample = (x_ve / (1 + sigmas[0] ** 2).sqrt()).float()
    for i, t in enumerate(scheduler.timesteps):
        sigma = sigmas[i]
        x = sample.double() * (1 + sigma ** 2).sqrt()
        eps = ((x - denoise(x, sigma)) / sigma).float()
        sample = scheduler.step(eps, t, sample, variance_noise=torch.zeros_like(sample)).prev_sample
    return sample.double()


def _kdiffusion_dpmpp(kind: str, denoise, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """k-diffusion's sample_dpmpp_2m / _2m_sde (eta 1) / _3m_sde (eta 1) with the noise left out."""
    d_1 = d_2 = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d = denoise(x, sigma)
        h = None
        if sigma_next == 0:
            x = d
        elif kind == "2m":
            h = -sigma_next.log() + sigma.log()
            if d_1 is None:
                x = (sigma_next / sigma) * x - torch.expm1(-h) * d
            else:
                r = h_1 / h
                x = (sigma_next / sigma) * x - torch.expm1(-h) * ((1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_1)
        elif kind in ("2m_sde", "2m_sde_heun"):
            h = -sigma_next.log() + sigma.log()
            x = sigma_next / sigma * torch.exp(-h) * x + (-torch.expm1(-2 * h)) * d
            if d_1 is not None:
                r = h_1 / h
                if kind == "2m_sde_heun":
                    x = x + ((-torch.expm1(-2 * h)) / (-2 * h) + 1) * (1 / r) * (d - d_1)
                else:
                    x = x + 0.5 * (-torch.expm1(-2 * h)) * (1 / r) * (d - d_1)
        elif kind == "3m_sde":
            h = -sigma_next.log() + sigma.log()
            h_eta = 2 * h
            x = torch.exp(-h_eta) * x + (-torch.expm1(-h_eta)) * d
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (d - d_1) / r0, (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = torch.expm1(-h_eta) / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                x = x + (torch.expm1(-h_eta) / h_eta + 1) * (d - d_1) / (h_1 / h)
        d_1, d_2 = d, d_1
        h_1, h_2 = h, h_1
    return x


@pytest.mark.parametrize("name, kind", [("DPM++ 2M", "2m"), ("DPM++ 2M SDE", "2m_sde"),
                                        ("DPM++ 2M SDE Heun", "2m_sde_heun"), ("DPM++ 3M SDE", "3m_sde")])
@pytest.mark.parametrize("steps", [5, 12])
def test_dpmpp_steps_match_kdiffusion(name, kind, steps):
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
    noise = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
    denoise = _toy_denoiser(mu)
    scheduler = samplers.create_scheduler(name, "Automatic", BASE_CONFIG)
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.double()
    ours = _run_diffusers(scheduler, denoise, noise * sigmas[0])
    reference = _kdiffusion_dpmpp(kind, denoise, noise * sigmas[0], sigmas)
    torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-3)


def test_3m_sde_third_order_term_is_kdiffusions_not_diffusers():
    """Guard for the fix: plain diffusers differs from k-diffusion by alpha_t * D2 per third-order step."""
    from diffusers import DPMSolverMultistepScheduler

    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
    noise = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
    denoise = _toy_denoiser(mu)
    ours = samplers.create_scheduler("DPM++ 3M SDE", "Automatic", BASE_CONFIG)
    # A DPM-Solver multistep scheduler, under its own name (it does not pass itself off as diffusers' class).
    assert isinstance(ours, DPMSolverMultistepScheduler) and type(ours) is not DPMSolverMultistepScheduler
    assert type(ours).__name__ == "KDiffusionDPMSolverMultistepScheduler"
    plain = DPMSolverMultistepScheduler.from_config(ours.config)
    ours.set_timesteps(8)
    plain.set_timesteps(8)
    reference = _kdiffusion_dpmpp("3m_sde", denoise, noise * ours.sigmas[0].double(), ours.sigmas.double())
    ours_error = (_run_diffusers(ours, denoise, noise * ours.sigmas[0].double()) - reference).abs().max()
    plain_error = (_run_diffusers(plain, denoise, noise * plain.sigmas[0].double()) - reference).abs().max()
    assert ours_error < 1e-3 < plain_error


# ---------------------------------------------------------------- real denoising loops


@pytest.fixture(scope="module")
def pipeline():
    """A tiny random StableDiffusionPipeline; prompts go in as embeddings, so no text encoder or tokenizer."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=32)
    # Four levels: the usual factor 8, so 64x64 pixels are the UNet's 8x8 latents.
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=None, tokenizer=None, unet=unet,
        scheduler=samplers.create_scheduler("Euler", "Automatic", BASE_CONFIG),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(1)
    cond = torch.randn(1, 77, 32, generator=generator)
    uncond = torch.randn(1, 77, 32, generator=generator)
    return pipe, cond, uncond


def _generate(pipeline, sampler_name, schedule, config, steps=4, output_type="np"):
    pipe, cond, uncond = pipeline
    pipe.scheduler = samplers.create_scheduler(sampler_name, schedule, config)
    calls = []

    def count(_pipe, step, timestep, callback_kwargs):
        calls.append(float(timestep))
        return callback_kwargs

    result = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=steps, height=64,
                  width=64, guidance_scale=7.0, output_type=output_type, callback_on_step_end=count,
                  generator=torch.Generator().manual_seed(2), **samplers.call_kwargs(sampler_name)).images
    return torch.as_tensor(np.asarray(result)), calls, pipe.scheduler


@pytest.mark.parametrize("sampler_name, schedule", PAIRS)
def test_denoising_loop_runs(pipeline, sampler_name, schedule):
    steps = 4
    image, calls, scheduler = _generate(pipeline, sampler_name, schedule, BASE_CONFIG, steps)
    assert image.shape == (1, 64, 64, 3)
    assert torch.isfinite(image).all()
    assert len(calls) == expected_evaluations(sampler_name, steps)


@pytest.mark.parametrize("sampler_name, schedule", [
    ("DPM++ 2M", "Automatic"), ("DPM++ 3M SDE", "Karras"), ("Euler a", "SGM Uniform"), ("Euler", "Beta"),
    ("DPM2 a", "Automatic"), ("DDIM", "Automatic"), ("PLMS", "Automatic"), ("UniPC", "Automatic"),
    ("LCM", "Automatic"),
])
@pytest.mark.parametrize("config", [V_CONFIG, ZSNR_CONFIG], ids=["v", "v-zsnr"])
def test_denoising_loop_runs_v_prediction(pipeline, sampler_name, schedule, config):
    latents, _, scheduler = _generate(pipeline, sampler_name, schedule, config, output_type="latent")
    assert scheduler.config.prediction_type == "v_prediction"
    assert torch.isfinite(latents).all()


def test_same_seed_same_result(pipeline):
    first, _, _ = _generate(pipeline, "DPM++ 2M SDE", "Automatic", BASE_CONFIG, output_type="latent")
    second, _, _ = _generate(pipeline, "DPM++ 2M SDE", "Automatic", BASE_CONFIG, output_type="latent")
    torch.testing.assert_close(first, second)
