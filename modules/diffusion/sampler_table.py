"""The table of A1111 samplers and schedule types, and the diffusers scheduler each one runs on.

A1111 names a sampling method in two parts: the sampler ("DPM++ 2M") and the schedule type ("Karras").
Each A1111 sampler listed here maps to one diffusers scheduler class and a few config overrides, chosen to
follow k-diffusion / A1111 as closely as diffusers allows:

* k-diffusion samplers space their sigmas over the model's whole range and end at sigma 0:
  "Uniform"/"Normal" → ``timestep_spacing="linspace"``; "SGM Uniform"/"Simple" → ``"trailing"``;
  "Karras" → ``use_karras_sigmas``; "Exponential"/"Polyexponential" (rho 1) → ``use_exponential_sigmas``;
  "Beta" → ``use_beta_sigmas`` (alpha = beta = 0.6, A1111's defaults). The final sigma is zero.
* A1111's timestep samplers (DDIM, PLMS, UniPC) ignore the schedule type; they use A1111's own spacing.
* "Automatic" means the sampler's A1111 default: Karras for DPM++ 2M / DPM2 / DPM2 a, Exponential for the
  DPM++ multistep SDE samplers, the model's uniform spacing for the rest.

What diffusers cannot do is left out rather than approximated badly (see ``OMITTED_SAMPLERS`` and
``OMITTED_SCHEDULES``).

Known differences from A1111 that remain (all small):
* noise comes from the job's torch generator, not k-diffusion's Brownian tree (DPM++ 2M SDE and 3M SDE);
* DPM2, DPM2 a and DPM++ 3M SDE do not discard the penultimate sigma as A1111 does;
* timesteps are rounded to integers only where diffusers rounds them;
* Uniform/Normal on the DPM-Solver multistep classes space n+1 points and drop t=0 (diffusers' "linspace"),
  where k-diffusion spaces n points including t=0;
* DDIM/PLMS use exactly ``steps`` timesteps; A1111 uses one more when 1000 is not a multiple of ``steps``;
* LCM picks its timesteps from the 50-step LCM grid the diffusers way, and allows at most 50 steps.

Plain data: nothing here imports diffusers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

AUTOMATIC = "Automatic"


# ---------------------------------------------------------------- schedule types


@dataclass(frozen=True)
class Schedule:
    """One A1111 schedule type (`modules/sd_schedulers.py`) and how diffusers reproduces it."""

    name: str                       # A1111 id, e.g. "karras"
    label: str                      # A1111 label, e.g. "Karras"
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0       # as /sdapi/v1/schedulers reports it
    need_inner_model: bool = False  # as /sdapi/v1/schedulers reports it
    spacing: str | None = None      # diffusers timestep_spacing; None for Automatic
    sigmas: str | None = None       # "karras" | "exponential" | "beta" | None (sigmas at the spaced timesteps)


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("automatic", AUTOMATIC),
    # k-diffusion get_sigmas: t = linspace(999, 0, n), sigma(t), then 0.
    Schedule("uniform", "Uniform", need_inner_model=True, spacing="linspace"),
    Schedule("karras", "Karras", default_rho=7.0, spacing="linspace", sigmas="karras"),
    Schedule("exponential", "Exponential", spacing="linspace", sigmas="exponential"),
    # get_sigmas_polyexponential with A1111's default rho 1 is exactly get_sigmas_exponential.
    Schedule("polyexponential", "Polyexponential", default_rho=1.0, spacing="linspace", sigmas="exponential"),
    # t = linspace(999, 0, n + 1)[:-1]: diffusers' "trailing" (to within one timestep).
    Schedule("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), need_inner_model=True, spacing="trailing"),
    # t = 999 - int(i * 1000 / n): also "trailing" to within one timestep.
    Schedule("simple", "Simple", need_inner_model=True, spacing="trailing"),
    # normal_scheduler without sgm: t = linspace(999, 0, n), the same sigmas as Uniform.
    Schedule("normal", "Normal", need_inner_model=True, spacing="linspace"),
    # beta.ppf(1 - linspace(0, 1, n), 0.6, 0.6) mapped onto [sigma_min, sigma_max], as diffusers does.
    Schedule("beta", "Beta", need_inner_model=True, spacing="linspace", sigmas="beta"),
)

# A1111 schedule types that diffusers' schedulers cannot reproduce (id → (label, reason)).
OMITTED_SCHEDULES: dict[str, tuple[str, str]] = {
    "kl_optimal": ("KL Optimal", "ends at sigma_min rather than 0 on an arctan grid; no diffusers option"),
    "align_your_steps": ("Align Your Steps", "hard-coded sigma tables; no diffusers option"),
    "ddim": ("DDIM", "A1111 takes 1000 // steps strides and may add steps; diffusers' spacings differ"),
}

_SPACING_ONLY = ("Uniform", "SGM Uniform", "Simple", "Normal")
_ALL_SCHEDULES = tuple(s.label for s in SCHEDULES if s.label != AUTOMATIC)


# ---------------------------------------------------------------- samplers

EtaMode = Literal["none", "ancestral", "ddim"]


@dataclass(frozen=True)
class Sampler:
    """One A1111 sampler and the diffusers scheduler that runs it."""

    name: str                                   # A1111 UI name
    aliases: tuple[str, ...]                    # A1111 aliases (k_dpmpp_2m, ...)
    default_schedule: str                       # the schedule label "Automatic" stands for
    scheduler_class: str                        # diffusers class name
    overrides: tuple[tuple[str, Any], ...] = ()  # config overrides on top of the model's base config
    schedules: tuple[str, ...] = _ALL_SCHEDULES  # schedule labels accepted besides "Automatic"
    ignores_schedule: bool = False              # A1111 timestep samplers: the schedule type is not used
    eta: EtaMode = "none"                       # none: deterministic; ancestral: diffusers fixes eta = 1;
    #                                             ddim: eta is a pipeline call argument
    a1111_options: tuple[tuple[str, str], ...] = ()  # /sdapi/v1/samplers "options" (A1111 1.10)

    @property
    def a1111_scheduler(self) -> str | None:
        """The schedule id in A1111's options (what a legacy combined name normalises against)."""
        return dict(self.a1111_options).get("scheduler")


def _is_torchsde_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("torchsde") is not None


_DPMPP = (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("solver_type", "midpoint"),
          ("lower_order_final", True), ("euler_at_final", False), ("final_sigmas_type", "zero"),
          ("use_lu_lambdas", False))
_DPMPP_SDE = (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2), ("solver_type", "midpoint"),
              ("lower_order_final", True), ("euler_at_final", False), ("final_sigmas_type", "zero"),
              ("use_lu_lambdas", False))


def _with(base: tuple[tuple[str, Any], ...], **changes: Any) -> tuple[tuple[str, Any], ...]:
    merged = dict(base)
    merged.update(changes)
    return tuple(merged.items())


# A1111's timestep samplers: timesteps 1, 1 + 1000 // steps, ... (diffusers "leading", steps_offset 1) and
# the last step lands on alphas_cumprod[0] (set_alpha_to_one False).
_A1111_TIMESTEPS = (("timestep_spacing", "leading"), ("steps_offset", 1), ("set_alpha_to_one", False))


def _build_samplers() -> tuple[Sampler, ...]:
    samplers = [
        Sampler("DPM++ 2M", ("k_dpmpp_2m",), "Karras", "DPMSolverMultistepScheduler", _DPMPP,
                a1111_options=(("scheduler", "karras"),)),
    ]
    if _is_torchsde_available():  # DPMSolverSDEScheduler needs torchsde's Brownian tree
        samplers.append(
            Sampler("DPM++ SDE", ("k_dpmpp_sde",), "Karras", "DPMSolverSDEScheduler", eta="ancestral",
                    a1111_options=(("second_order", "True"), ("brownian_noise", "True"),
                                   ("scheduler", "karras"))))
    samplers += [
        Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "Exponential", "DPMSolverMultistepScheduler", _DPMPP_SDE,
                eta="ancestral", a1111_options=(("brownian_noise", "True"), ("scheduler", "exponential"))),
        Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "Exponential", "DPMSolverMultistepScheduler",
                _with(_DPMPP_SDE, solver_type="heun"), eta="ancestral",
                a1111_options=(("brownian_noise", "True"), ("solver_type", "heun"), ("scheduler", "exponential"))),
        # k-diffusion's sample_dpmpp_3m_sde runs third order up to the last step (no lower_order_final), and
        # its second-order warm-up step has the phi_2 weight of diffusers' "heun" solver type.
        Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "Exponential", "DPMSolverMultistepScheduler",
                _with(_DPMPP_SDE, solver_order=3, solver_type="heun", lower_order_final=False), eta="ancestral",
                a1111_options=(("brownian_noise", "True"), ("discard_next_to_last_sigma", "True"),
                               ("scheduler", "exponential"))),
        # diffusers' EulerAncestralDiscreteScheduler has no karras/exponential/beta sigmas.
        Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "Uniform", "EulerAncestralDiscreteScheduler",
                schedules=_SPACING_ONLY, eta="ancestral", a1111_options=(("uses_ensd", "True"),)),
        Sampler("Euler", ("k_euler",), "Uniform", "EulerDiscreteScheduler"),
        Sampler("LMS", ("k_lms",), "Uniform", "LMSDiscreteScheduler"),
        Sampler("Heun", ("k_heun",), "Uniform", "HeunDiscreteScheduler",
                a1111_options=(("second_order", "True"),)),
        Sampler("DPM2", ("k_dpm_2",), "Karras", "KDPM2DiscreteScheduler",
                a1111_options=(("discard_next_to_last_sigma", "True"), ("second_order", "True"),
                               ("scheduler", "karras"))),
        Sampler("DPM2 a", ("k_dpm_2_a",), "Karras", "KDPM2AncestralDiscreteScheduler", eta="ancestral",
                a1111_options=(("discard_next_to_last_sigma", "True"), ("uses_ensd", "True"),
                               ("second_order", "True"), ("scheduler", "karras"))),
        Sampler("DDIM", ("ddim",), "Uniform", "DDIMScheduler", _A1111_TIMESTEPS, ignores_schedule=True,
                eta="ddim"),
        # PLMS: its first step is the same two-evaluation pseudo improved Euler step as A1111's.
        Sampler("PLMS", ("plms",), "Uniform", "PNDMScheduler", _A1111_TIMESTEPS + (("skip_prk_steps", True),),
                ignores_schedule=True),
        # A1111's UniPC defaults: variant bh1, order 3, lower order final, time_uniform skip type from t=1 to
        # t=1/1000 (n + 1 points, the last one, t=0, not denoised further: final sigma = sigma_min).
        Sampler("UniPC", ("unipc",), "Uniform", "UniPCMultistepScheduler",
                (("solver_type", "bh1"), ("solver_order", 3), ("lower_order_final", True), ("predict_x0", True),
                 ("timestep_spacing", "linspace"), ("final_sigmas_type", "sigma_min")),
                ignores_schedule=True),
        # A1111 runs LCM as a k-diffusion sampler over the 50-step LCM grid; diffusers' LCMScheduler picks
        # evenly spaced points of the same grid and has no sigma schedules.
        Sampler("LCM", ("k_lcm",), "Uniform", "LCMScheduler",
                (("original_inference_steps", 50), ("timestep_scaling", 10.0)),
                schedules=("Uniform", "Normal")),
    ]
    return tuple(samplers)


SAMPLERS: tuple[Sampler, ...] = _build_samplers()

# A1111 samplers left out, with the reason (name → reason).
OMITTED_SAMPLERS: dict[str, str] = {
    "DPM++ 2S a": "diffusers' DPMSolverSinglestepScheduler has no ancestral (eta) variant",
    "DPM fast": "diffusers has no DPM-Solver-fast scheduler",
    "DPM adaptive": "diffusers has no adaptive-step DPM-Solver scheduler",
    "Restart": "diffusers has no Restart sampler",
    "DDIM CFG++": "CFG++ needs the unconditional prediction inside the step; diffusers' schedulers never see it",
}
if not any(s.name == "DPM++ SDE" for s in SAMPLERS):
    OMITTED_SAMPLERS["DPM++ SDE"] = "diffusers' DPMSolverSDEScheduler needs the torchsde package, not installed"
