"""The table of A1111 v1.10 samplers and schedule types, as A1111 declares them.

A1111 names a sampling method in two parts: the sampler ("DPM++ 2M") and the schedule type ("Karras"). Every
sampler of A1111's list is here with A1111's aliases and options (`sd_samplers_kdiffusion.py`,
`sd_samplers_timesteps.py`, `sd_samplers_lcm.py`); each runs the algorithm of the same name in
`diffusion/ksampling/` step for step as A1111 does. The k-diffusion samplers accept every schedule type;
"Automatic" is the sampler's own (`scheduler` option) or, without one, the model's uniform spacing. The
timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) use A1111's timesteps and ignore the schedule type.

Plain data: nothing here imports torch or diffusers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AUTOMATIC = "Automatic"


@dataclass(frozen=True)
class Schedule:
    """One A1111 schedule type (`modules/sd_schedulers.py`)."""

    name: str                       # A1111 id, e.g. "karras"
    label: str                      # A1111 label, e.g. "Karras"
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0       # as /sdapi/v1/schedulers reports it
    need_inner_model: bool = False  # as /sdapi/v1/schedulers reports it


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("automatic", AUTOMATIC),
    Schedule("uniform", "Uniform", need_inner_model=True),
    Schedule("karras", "Karras", default_rho=7.0),
    Schedule("exponential", "Exponential"),
    Schedule("polyexponential", "Polyexponential", default_rho=1.0),
    Schedule("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), need_inner_model=True),
    Schedule("kl_optimal", "KL Optimal"),
    Schedule("align_your_steps", "Align Your Steps"),
    Schedule("simple", "Simple", need_inner_model=True),
    Schedule("normal", "Normal", need_inner_model=True),
    Schedule("ddim", "DDIM", need_inner_model=True),
    Schedule("beta", "Beta", need_inner_model=True),
)

_ALL_SCHEDULES = tuple(s.label for s in SCHEDULES if s.label != AUTOMATIC)

# A1111's sampler_extra_params: the settings each k-diffusion function takes (the others use k-diffusion's defaults).
_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")
_NOISE = ("s_noise",)
# The functions with an eta parameter (A1111 passes the eta setting, or the request's, to these only).
_TAKES_ETA = {"euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
              "dpmpp_3m_sde", "dpm_fast", "dpm_adaptive", "ddim", "ddim_cfgpp"}
TIMESTEP_ALGORITHMS = {"ddim", "ddim_cfgpp", "plms", "unipc"}


@dataclass(frozen=True)
class Sampler:
    """One A1111 sampler: its names, the algorithm that runs it and A1111's options for it."""

    name: str                                   # A1111 UI name
    aliases: tuple[str, ...]                    # A1111 aliases (k_dpmpp_2m, ...)
    algorithm: str                              # a function of diffusion/ksampling
    a1111_options: tuple[tuple[str, Any], ...] = ()   # A1111's SamplerData options, as /sdapi/v1/samplers lists
    extra_params: tuple[str, ...] = ()          # the s_* settings the function takes

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.a1111_options).get(key, default)

    @property
    def a1111_scheduler(self) -> str | None:
        """The schedule id "Automatic" stands for (None: the model's own spacing)."""
        return self.option("scheduler")

    @property
    def default_schedule(self) -> str | None:
        """The schedule label "Automatic" stands for, or None for the model's own spacing."""
        return next((s.label for s in SCHEDULES if s.name == self.a1111_scheduler), None)

    @property
    def ignores_schedule(self) -> bool:
        return self.algorithm in TIMESTEP_ALGORITHMS

    @property
    def schedules(self) -> tuple[str, ...]:
        """Every sampler accepts every schedule type, as in A1111 (the timestep samplers ignore it)."""
        return _ALL_SCHEDULES

    @property
    def takes_eta(self) -> bool:
        return self.algorithm in _TAKES_ETA

    @property
    def second_order(self) -> bool:
        """A1111 counts two model calls a step for these (prompt-editing schedules, progress totals)."""
        return bool(self.option("second_order", False))


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), "dpmpp_2m", (("scheduler", "karras"),)),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), "dpmpp_sde",
            (("scheduler", "karras"), ("second_order", True), ("brownian_noise", True)), _NOISE),
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "dpmpp_2m_sde",
            (("scheduler", "exponential"), ("brownian_noise", True)), _NOISE),
    Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "dpmpp_2m_sde",
            (("scheduler", "exponential"), ("brownian_noise", True), ("solver_type", "heun")), _NOISE),
    Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), "dpmpp_2s_ancestral",
            (("scheduler", "karras"), ("uses_ensd", True), ("second_order", True)), _NOISE),
    Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "dpmpp_3m_sde",
            (("scheduler", "exponential"), ("discard_next_to_last_sigma", True), ("brownian_noise", True)), _NOISE),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "euler_ancestral", (("uses_ensd", True),)),
    Sampler("Euler", ("k_euler",), "euler", (), _CHURN),
    Sampler("LMS", ("k_lms",), "lms"),
    Sampler("Heun", ("k_heun",), "heun", (("second_order", True),), _CHURN),
    Sampler("DPM2", ("k_dpm_2",), "dpm_2",
            (("scheduler", "karras"), ("discard_next_to_last_sigma", True), ("second_order", True)), _CHURN),
    Sampler("DPM2 a", ("k_dpm_2_a",), "dpm_2_ancestral",
            (("scheduler", "karras"), ("discard_next_to_last_sigma", True), ("uses_ensd", True),
             ("second_order", True)), _NOISE),
    Sampler("DPM fast", ("k_dpm_fast",), "dpm_fast", (("uses_ensd", True),), _NOISE),
    Sampler("DPM adaptive", ("k_dpm_ad",), "dpm_adaptive", (("uses_ensd", True),)),
    Sampler("Restart", ("restart",), "restart", (("scheduler", "karras"), ("second_order", True))),
    Sampler("DDIM", ("ddim",), "ddim"),
    Sampler("DDIM CFG++", ("ddim_cfgpp",), "ddim_cfgpp"),
    Sampler("PLMS", ("plms",), "plms"),
    Sampler("UniPC", ("unipc",), "unipc"),
    Sampler("LCM", ("k_lcm",), "lcm"),
)
