"""A1111 sampler / schedule names ↔ diffusers schedulers (modules/diffusion/samplers.py, sampler_table.py): names,
aliases and listings, and the schedulers built for each sampler and schedule type. What the built schedulers
compute (sigmas, steps, denoising loops) is tests/test_sampler_runs.py."""
from __future__ import annotations

import math

import pytest
import torch

from modules.diffusion import samplers
from modules.diffusion.samplers import AUTOMATIC
from tests.fixtures.scheduler_configs import BASE_CONFIG, PAIRS, V_CONFIG, ZSNR_CONFIG, expected_evaluations


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
        assert len(scheduler.timesteps) == expected_evaluations(sampler_name, steps), steps
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
