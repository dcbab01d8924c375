"""A1111 sampler / schedule names (modules/diffusion/samplers.py, sampler_table.py): names, aliases, legacy
combined names, validation and the API's listings. What the samplers compute is tests/test_ksampling_reference.py
(against k-diffusion) and tests/test_sampler_runs.py (in a real pipeline)."""
from __future__ import annotations

import pytest

from modules.diffusion import samplers


# ---------------------------------------------------------------- lists and names


def test_lists_follow_a1111_order():
    names = samplers.sampler_names()
    a1111_order = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                   "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
                   "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
    assert names == a1111_order   # every sampler A1111 v1.10 lists, in its order
    assert samplers.schedule_labels() == ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential",
                                          "SGM Uniform", "KL Optimal", "Align Your Steps", "Simple", "Normal",
                                          "DDIM", "Beta"]


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


@pytest.mark.parametrize("name", ["DPM fast", "dpm adaptive", "k_dpm_fast", "Restart", "DDIM CFG++", "DPM++ 2S a",
                                  "k_dpmpp_sde", "ddim_cfgpp"])
def test_every_a1111_sampler_resolves(name):
    resolved, schedule = samplers.resolve(name)
    assert resolved in samplers.sampler_names() and schedule == "Automatic"


def test_invalid_schedules_name_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown schedule type 'Wobbly'; choose one of: Automatic, Uniform, Karras"):
        samplers.resolve("Euler", "Wobbly")
    # every k-diffusion sampler takes every schedule type, as in A1111
    assert samplers.resolve("Euler a", "Karras") == ("Euler a", "Karras")
    assert samplers.resolve("DPM++ 2M Align Your Steps") == ("DPM++ 2M", "Align Your Steps")
    assert samplers.resolve("LCM", "Exponential") == ("LCM", "Exponential")
    assert samplers.resolve("Euler", "KL Optimal") == ("Euler", "KL Optimal")
    samplers.validate("Euler", "sgm_uniform")


def test_timestep_samplers_accept_and_ignore_schedule_types():
    for name in ("DDIM", "PLMS", "UniPC", "DDIM CFG++"):
        assert samplers.get_sampler(name).ignores_schedule
        assert samplers.resolve(name, "Karras") == (name, "Karras")   # accepted (A1111 ignores it) ...
        assert samplers.infotext_schedule(name, "Karras") == "Karras"  # ... and writes what was asked


def test_infotext_schedule_follows_a1111():
    # A1111 writes the request's schedule type, replaced by the one "Automatic" resolved to in get_sigmas.
    assert samplers.infotext_schedule("DPM++ 2M", "Automatic") == "Karras"
    assert samplers.infotext_schedule("DPM++ 2M SDE", "Automatic") == "Exponential"
    assert samplers.infotext_schedule("Restart", "Automatic") == "Karras"
    assert samplers.infotext_schedule("DPM++ 2M", "Exponential") == "Exponential"
    assert samplers.infotext_schedule("Euler", "Automatic") == "Automatic"   # the model's own sigmas
    assert samplers.infotext_schedule("Euler", "Uniform") == "Uniform"
    assert samplers.infotext_schedule("Euler a", "SGMUniform") == "SGM Uniform"
    assert samplers.infotext_schedule("UniPC", "Automatic") == "Automatic"


def test_api_listings():
    listed = samplers.api_samplers()
    assert [s["name"] for s in listed] == samplers.sampler_names()
    by_name = {s["name"]: s for s in listed}
    assert by_name["DPM++ 2M"] == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}
    assert by_name["Euler a"]["aliases"] == ["k_euler_a", "k_euler_ancestral"]
    assert by_name["DPM++ 2M SDE"]["options"]["scheduler"] == "exponential"
    assert by_name["DDIM"]["options"] == {}
    assert by_name["DPM++ SDE"]["options"] == {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"}
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


def test_ddim_cfgpp_needs_guidance():
    from pydantic import ValidationError

    from modules.generation.request import validate_request

    with pytest.raises(ValidationError, match="cfg_scale: DDIM CFG\\+\\+ needs a CFG scale above 1"):
        validate_request({"sampler_name": "DDIM CFG++", "cfg_scale": 1.0})
    assert validate_request({"sampler_name": "ddim_cfgpp", "cfg_scale": 5.0}).sampler_name == "DDIM CFG++"
