"""A1111 sampler / schedule names ↔ diffusers schedulers (modules/diffusion/samplers.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modules.diffusion import samplers
from modules.diffusion.samplers import AUTOMATIC, SAMPLERS

BASE_CONFIG = {  # the SD1.x training schedule, as the model loader hands it over
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
    "timestep_spacing": "leading", "rescale_betas_zero_snr": False, "skip_prk_steps": True,
    "trained_betas": None,
}
V_CONFIG = {**BASE_CONFIG, "prediction_type": "v_prediction"}
ZSNR_CONFIG = {**V_CONFIG, "rescale_betas_zero_snr": True}

PAIRS = [(s.name, schedule) for s in SAMPLERS for schedule in samplers.supported_schedules(s.name)]
TWO_EVALS_PER_STEP = {"HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
                      "DPMSolverSDEScheduler"}


def expected_evaluations(scheduler, steps: int) -> int:
    """Model evaluations for `steps` steps; the same count A1111 makes."""
    name = type(scheduler).__name__
    if name in TWO_EVALS_PER_STEP:   # second-order: the last step (to sigma 0) is a plain Euler step
        return 2 * steps - 1
    if name == "PNDMScheduler":      # PLMS: the first step evaluates twice (pseudo improved Euler)
        return steps + 1 if steps > 1 else 1
    return steps


# ---------------------------------------------------------------- lists and names


def test_lists_follow_a1111_order():
    names = samplers.sampler_names()
    a1111_order = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                   "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
                   "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
    assert names == [n for n in a1111_order if n in names]
    assert set(names) | set(samplers.OMITTED_SAMPLERS) == set(a1111_order)
    assert not set(names) & set(samplers.OMITTED_SAMPLERS)
    for required in ["DPM++ 2M", "DPM++ 2M SDE", "DPM++ 3M SDE", "Euler a", "Euler", "DDIM", "UniPC", "LCM"]:
        assert required in names
    labels = samplers.schedule_labels()
    assert labels[0] == "Automatic"
    assert {"Uniform", "Karras", "Exponential", "SGM Uniform", "Beta"} <= set(labels)


def test_dpmpp_sde_listed_only_with_torchsde():
    try:
        import torchsde  # noqa: F401
        available = True
    except ImportError:
        available = False
    assert ("DPM++ SDE" in samplers.sampler_names()) == available
    assert ("DPM++ SDE" in samplers.OMITTED_SAMPLERS) == (not available)


@pytest.mark.parametrize("given, expected", [
    ("DPM++ 2M", ("DPM++ 2M", "Automatic")),
    ("dpm++ 2m", ("DPM++ 2M", "Automatic")),
    ("k_dpmpp_2m", ("DPM++ 2M", "Automatic")),
    ("K_EULER_A", ("Euler a", "Automatic")),
    ("k_euler_ancestral", ("Euler a", "Automatic")),
    ("Euler a", ("Euler a", "Automatic")),
    ("euler", ("Euler", "Automatic")),
    ("k_lms", ("LMS", "Automatic")),
    ("ddim", ("DDIM", "Automatic")),
    ("plms", ("PLMS", "Automatic")),
    ("k_lcm", ("LCM", "Automatic")),
    ("DPM++ 2M SDE Heun", ("DPM++ 2M SDE Heun", "Automatic")),
    (None, ("DPM++ 2M", "Automatic")),          # A1111's default sampler
    ("", ("DPM++ 2M", "Automatic")),
])
def test_resolve_names_and_aliases(given, expected):
    assert samplers.resolve(given) == expected


@pytest.mark.parametrize("given, expected", [
    # the parsed schedule equals the sampler's A1111 default → normalised to Automatic
    ("DPM++ 2M Karras", ("DPM++ 2M", "Automatic")),
    ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "Automatic")),
    ("DPM2 a Karras", ("DPM2 a", "Automatic")),
    ("k_dpmpp_2m_ka", ("DPM++ 2M", "Automatic")),       # pre-1.9 alias of "DPM++ 2M Karras"
    # not the default: kept
    ("DPM++ 2M SDE Karras", ("DPM++ 2M SDE", "Karras")),
    ("DPM++ 2M Exponential", ("DPM++ 2M", "Exponential")),
    ("LMS Karras", ("LMS", "Karras")),
    ("k_lms_ka", ("LMS", "Karras")),
    ("Euler Uniform", ("Euler", "Uniform")),             # Euler has no A1111 default scheduler option
    ("DPM++ 3M SDE SGMUniform", ("DPM++ 3M SDE", "SGM Uniform")),
    ("dpm++ 2m sde heun beta", ("DPM++ 2M SDE Heun", "Beta")),
    ("Euler a SGM Uniform", ("Euler a", "SGM Uniform")),
])
def test_resolve_legacy_combined_names(given, expected):
    assert samplers.resolve(given) == expected
    assert samplers.resolve(given, "Automatic") == expected
    assert samplers.resolve(given, None) == expected


@pytest.mark.parametrize("schedule, expected", [
    ("Karras", "Karras"), ("karras", "Karras"), ("SGMUniform", "SGM Uniform"), ("sgm_uniform", "SGM Uniform"),
    ("SGM Uniform", "SGM Uniform"), ("exponential", "Exponential"), ("Beta", "Beta"), ("automatic", "Automatic"),
    (None, "Automatic"), ("", "Automatic"), ("Automatic", "Automatic"), ("polyexponential", "Polyexponential"),
])
def test_resolve_schedule_spellings(schedule, expected):
    assert samplers.resolve("Euler", schedule) == ("Euler", expected)


def test_explicit_schedule_wins_over_combined_name():
    assert samplers.resolve("DPM++ 2M Karras", "Exponential") == ("DPM++ 2M", "Exponential")
    assert samplers.resolve("LMS Karras", "Uniform") == ("LMS", "Uniform")
    # an explicit schedule is kept as given, even the sampler's default
    assert samplers.resolve("DPM++ 2M", "Karras") == ("DPM++ 2M", "Karras")


def test_unknown_sampler_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown sampler 'Nope'; choose one of: DPM\+\+ 2M, ") as error:
        samplers.resolve("Nope")
    assert "Euler a" in str(error.value) and "UniPC" in str(error.value)


@pytest.mark.parametrize("name", ["DPM fast", "dpm adaptive", "k_dpm_fast", "Restart", "DDIM CFG++", "DPM++ 2S a"])
def test_omitted_samplers_say_why(name):
    with pytest.raises(ValueError, match="not available") as error:
        samplers.resolve(name)
    assert "choose one of: DPM++ 2M" in str(error.value)


def test_invalid_schedules_name_the_valid_ones():
    with pytest.raises(ValueError, match=r"'Karras' is not available for sampler 'Euler a'") as error:
        samplers.resolve("Euler a", "Karras")
    assert "Automatic, Uniform, SGM Uniform, Simple, Normal" in str(error.value)
    with pytest.raises(ValueError, match="Karras"):
        samplers.resolve("Euler a Karras")
    with pytest.raises(ValueError, match="choose one of: Automatic, Uniform"):
        samplers.resolve("LCM", "Exponential")
    with pytest.raises(ValueError, match=r"unknown schedule type 'Wobbly'; choose one of: Automatic, Uniform, Karras"):
        samplers.resolve("Euler", "Wobbly")
    with pytest.raises(ValueError, match="KL Optimal is not available"):
        samplers.resolve("Euler", "KL Optimal")
    with pytest.raises(ValueError, match="Align Your Steps"):
        samplers.resolve("DPM++ 2M Align Your Steps")
    with pytest.raises(ValueError, match="Karras"):
        samplers.validate("LCM", "karras")
    samplers.validate("Euler", "sgm_uniform")


def test_timestep_samplers_accept_and_ignore_schedule_types():
    for name in ("DDIM", "PLMS", "UniPC"):
        assert samplers.get_sampler(name).ignores_schedule
        assert samplers.resolve(name, "Karras") == (name, "Karras")
        steps = {}
        for label in samplers.schedule_labels():
            scheduler = samplers.create_scheduler(name, label, BASE_CONFIG)
            scheduler.set_timesteps(10)
            steps[label] = scheduler.timesteps.tolist()
        assert all(value == steps[AUTOMATIC] for value in steps.values())


def test_effective_schedule():
    assert samplers.effective_schedule("DPM++ 2M", "Automatic") == "Karras"
    assert samplers.effective_schedule("DPM++ 2M SDE", "Automatic") == "Exponential"
    assert samplers.effective_schedule("DPM++ 3M SDE", "Automatic") == "Exponential"
    assert samplers.effective_schedule("DPM2", "Automatic") == "Karras"
    assert samplers.effective_schedule("DPM2 a", "Automatic") == "Karras"
    assert samplers.effective_schedule("Euler a", "Automatic") == "Uniform"
    assert samplers.effective_schedule("Euler", "Automatic") == "Uniform"
    assert samplers.effective_schedule("DPM++ 2M", "Exponential") == "Exponential"
    assert samplers.effective_schedule("k_dpmpp_2m", "sgm_uniform") == "SGM Uniform"


def test_infotext_schedule_follows_a1111_get_sigmas():
    assert samplers.infotext_schedule("DPM++ 2M", "Automatic") == "Karras"
    assert samplers.infotext_schedule("DPM++ 2M SDE", "Automatic") == "Exponential"
    assert samplers.infotext_schedule("DPM++ 2M", "Exponential") == "Exponential"
    assert samplers.infotext_schedule("Euler", "Automatic") is None      # the model's own sigmas
    assert samplers.infotext_schedule("Euler", "Uniform") == "Uniform"
    assert samplers.infotext_schedule("Euler a", "SGMUniform") == "SGM Uniform"
    assert samplers.infotext_schedule("DDIM", "Karras") is None          # timestep samplers ignore it
    assert samplers.infotext_schedule("UniPC", "Automatic") is None


def test_step_limits():
    assert samplers.create_scheduler("LCM", "Automatic", BASE_CONFIG, steps=50)
    with pytest.raises(ValueError, match="at most 50 steps"):
        samplers.create_scheduler("LCM", "Automatic", BASE_CONFIG, steps=51)
    with pytest.raises(ValueError, match="steps"):
        samplers.create_scheduler("Euler", "Automatic", BASE_CONFIG, steps=0)


def test_one_step_starts_at_sigma_max():
    # diffusers' linspace spacing would put a single step at t = 0; k-diffusion starts at t = 999
    for name, schedule in [("Euler a", "Automatic"), ("Euler", "Karras"), ("LMS", "Beta"), ("DPM2", "Automatic")]:
        scheduler = samplers.create_scheduler(name, schedule, BASE_CONFIG, steps=1)
        scheduler.set_timesteps(1)
        assert math.isclose(float(scheduler.sigmas[0]), 14.6146, rel_tol=1e-3), name
        assert float(scheduler.timesteps[0]) > 990


def test_api_listings():
    listed = samplers.api_samplers()
    assert [s["name"] for s in listed] == samplers.sampler_names()
    by_name = {s["name"]: s for s in listed}
    assert by_name["DPM++ 2M"] == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}
    assert by_name["Euler a"]["aliases"] == ["k_euler_a", "k_euler_ancestral"]
    assert by_name["DPM++ 2M SDE"]["options"]["scheduler"] == "exponential"
    assert by_name["DDIM"]["options"] == {}
    for item in listed:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in item["options"].items())

    schedulers = samplers.api_schedulers()
    assert schedulers[0] == {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1.0,
                             "need_inner_model": False}
    by_id = {s["name"]: s for s in schedulers}
    assert by_id["karras"]["default_rho"] == 7.0
    assert by_id["sgm_uniform"]["aliases"] == ["SGMUniform"]
    assert by_id["uniform"]["need_inner_model"] is True
    assert [s["label"] for s in schedulers] == samplers.schedule_labels()


def test_backend_imports_no_web_framework():
    import subprocess
    import sys
    code = ("import sys, modules.diffusion.samplers as s; s.api_samplers(); s.resolve('Euler a'); "
            "print(any(m in sys.modules for m in ('gradio', 'fastapi', 'diffusers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- building schedulers


@pytest.mark.parametrize("sampler_name, schedule", PAIRS)
def test_every_pair_builds_and_sets_timesteps(sampler_name, schedule):
    for steps in (1, 2, 4, 20, 50):
        scheduler = samplers.create_scheduler(sampler_name, schedule, BASE_CONFIG, steps=steps)
        scheduler.set_timesteps(steps)
        assert len(scheduler.timesteps) == expected_evaluations(scheduler, steps), steps
        assert torch.isfinite(torch.as_tensor(scheduler.timesteps, dtype=torch.float64)).all()
        sigmas = getattr(scheduler, "sigmas", None)
        if sigmas is not None and len(sigmas) and not samplers.get_sampler(sampler_name).ignores_schedule:
            assert float(sigmas[-1]) == 0.0       # k-diffusion samplers end at sigma 0
            assert math.isclose(float(sigmas[0]), 14.6146, rel_tol=1e-3)  # and start at the model's sigma_max


def test_create_scheduler_fresh_objects_and_carries_the_model_config():
    a = samplers.create_scheduler("DPM++ 2M", "Automatic", V_CONFIG)
    b = samplers.create_scheduler("DPM++ 2M", "Automatic", V_CONFIG)
    assert a is not b
    a.set_timesteps(5)
    b.set_timesteps(7)
    assert (len(a.timesteps), len(b.timesteps)) == (5, 7)   # no shared state between jobs
    assert a.config.prediction_type == "v_prediction"
    assert a.config.use_karras_sigmas and a.config.algorithm_type == "dpmsolver++"
    assert a.config.final_sigmas_type == "zero" and not a.config.use_lu_lambdas and not a.config.euler_at_final
    assert samplers.create_scheduler("Euler", "Karras", V_CONFIG).config.prediction_type == "v_prediction"


def test_config_details_per_sampler():
    def cfg(name, schedule="Automatic"):
        return samplers.create_scheduler(name, schedule, BASE_CONFIG).config

    assert cfg("DPM++ 2M SDE").algorithm_type == "sde-dpmsolver++" and cfg("DPM++ 2M SDE").use_exponential_sigmas
    assert cfg("DPM++ 2M SDE Heun").solver_type == "heun"
    assert cfg("DPM++ 3M SDE").solver_order == 3
    assert cfg("Euler", "Uniform").timestep_spacing == "linspace"
    assert cfg("Euler", "Normal").timestep_spacing == "linspace"
    assert cfg("Euler", "SGM Uniform").timestep_spacing == "trailing"
    assert cfg("Euler", "Simple").timestep_spacing == "trailing"
    assert cfg("Euler", "Beta").use_beta_sigmas
    assert cfg("LMS", "Karras").use_karras_sigmas and cfg("LMS", "Karras").timestep_spacing == "linspace"
    assert cfg("PLMS").skip_prk_steps and cfg("PLMS").steps_offset == 1
    assert cfg("DDIM").timestep_spacing == "leading" and not cfg("DDIM").set_alpha_to_one
    unipc = cfg("UniPC")
    assert (unipc.solver_type, unipc.solver_order, unipc.final_sigmas_type) == ("bh1", 3, "sigma_min")


def test_model_scheduler_options_do_not_leak_into_the_choice():
    # a diffusers-format model may ship a scheduler config with its own sigma options
    odd = {**BASE_CONFIG, "use_karras_sigmas": True, "timestep_spacing": "trailing", "algorithm_type": "dpmsolver",
           "final_sigmas_type": "sigma_min", "solver_order": 3, "use_lu_lambdas": True}
    euler = samplers.create_scheduler("Euler", "Uniform", odd).config
    assert not euler.use_karras_sigmas and euler.timestep_spacing == "linspace"
    dpm = samplers.create_scheduler("DPM++ 2M", "Exponential", odd).config
    assert (dpm.algorithm_type, dpm.solver_order, dpm.final_sigmas_type) == ("dpmsolver++", 2, "zero")
    assert dpm.use_exponential_sigmas and not dpm.use_karras_sigmas and not dpm.use_lu_lambdas


def test_eta():
    assert samplers.create_scheduler("Euler a", "Automatic", BASE_CONFIG, eta=1.0)
    with pytest.raises(ValueError, match="only supports eta 1.0"):
        samplers.create_scheduler("Euler a", "Automatic", BASE_CONFIG, eta=0.5)
    with pytest.raises(ValueError, match="eta"):
        samplers.create_scheduler("DDIM", "Automatic", BASE_CONFIG, eta=-1)
    assert samplers.create_scheduler("DPM++ 2M", "Automatic", BASE_CONFIG, eta=0.3)  # deterministic: unused
    assert samplers.create_scheduler("DDIM", "Automatic", BASE_CONFIG, eta=0.5)
    assert samplers.call_kwargs("DDIM") == {"eta": 0.0}
    assert samplers.call_kwargs("ddim", eta=0.5) == {"eta": 0.5}
    assert samplers.call_kwargs("Euler a", eta=0.5) == {}


@pytest.mark.parametrize("name", ["LMS", "Heun", "DPM2", "DPM2 a", "PLMS", "Euler", "DPM++ 2M", "UniPC"])
def test_zero_terminal_snr_reaches_every_class(name):
    scheduler = samplers.create_scheduler(name, "Automatic", ZSNR_CONFIG)
    assert float(scheduler.alphas_cumprod[-1]) < 1e-6
    scheduler.set_timesteps(8)
    assert torch.isfinite(torch.as_tensor(scheduler.timesteps, dtype=torch.float64)).all()


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
    assert len(calls) == expected_evaluations(scheduler, steps)


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
