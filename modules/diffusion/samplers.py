"""A1111 sampler and schedule-type names ↔ diffusers schedulers.

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
``OMITTED_SCHEDULES``); asking for it raises ``ValueError`` naming what is available.

Known differences from A1111 that remain (all small):
* noise comes from the job's torch generator, not k-diffusion's Brownian tree (DPM++ 2M SDE and 3M SDE);
* DPM2, DPM2 a and DPM++ 3M SDE do not discard the penultimate sigma as A1111 does;
* timesteps are rounded to integers only where diffusers rounds them;
* Uniform/Normal on the DPM-Solver multistep classes space n+1 points and drop t=0 (diffusers' "linspace"),
  where k-diffusion spaces n points including t=0;
* DDIM/PLMS use exactly ``steps`` timesteps; A1111 uses one more when 1000 is not a multiple of ``steps``;
* LCM picks its timesteps from the 50-step LCM grid the diffusers way, and allows at most 50 steps.

Nothing here imports a web framework; diffusers is imported only when a scheduler is built.
"""
from __future__ import annotations

import copy
import functools
import inspect
import json
from dataclasses import dataclass
from typing import Any, Literal, Mapping

__all__ = [
    "Sampler", "Schedule", "SAMPLERS", "SCHEDULES", "OMITTED_SAMPLERS", "OMITTED_SCHEDULES",
    "sampler_names", "schedule_labels", "get_sampler", "supported_schedules", "resolve", "validate",
    "effective_schedule", "infotext_schedule", "create_scheduler", "call_kwargs", "api_samplers", "api_schedulers",
]

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

_SCHEDULE_BY_LABEL = {s.label: s for s in SCHEDULES}
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

_OMITTED_ALIASES = {
    "k_dpmpp_2s_a": "DPM++ 2S a", "k_dpm_fast": "DPM fast", "k_dpm_ad": "DPM adaptive", "restart": "Restart",
    "ddim_cfgpp": "DDIM CFG++", "k_dpmpp_sde": "DPM++ SDE",
}

_BY_KEY: dict[str, Sampler] = {}
for _sampler in SAMPLERS:
    for _key in (_sampler.name, *_sampler.aliases):
        _BY_KEY[_key.lower()] = _sampler
del _sampler, _key

# Pre-1.9 aliases of the combined names ("k_dpmpp_2m_ka" was "DPM++ 2M Karras").
_LEGACY_ALIAS_SUFFIXES = {"_ka": "Karras", "_exp": "Exponential"}


# ---------------------------------------------------------------- lookups


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def schedule_labels() -> list[str]:
    return [s.label for s in SCHEDULES]


def _choices(values) -> str:
    return ", ".join(values)


def get_sampler(name: str) -> Sampler:
    """The sampler with this name or alias (case-insensitive); combined names are `resolve`'s job."""
    found = _BY_KEY.get((name or "").strip().lower())
    if found is None:
        raise ValueError(_unknown_sampler_message(name))
    return found


def _unknown_sampler_message(name: str | None) -> str:
    omitted = next((n for n in OMITTED_SAMPLERS if n.lower() == (name or "").strip().lower()), None)
    omitted = omitted or _OMITTED_ALIASES.get((name or "").strip().lower())
    why = f" ({omitted} is not available: {OMITTED_SAMPLERS[omitted]})" if omitted in OMITTED_SAMPLERS else ""
    return f"unknown sampler {name!r}{why}; choose one of: {_choices(sampler_names())}"


def supported_schedules(sampler_name: str) -> list[str]:
    """The schedule labels this sampler accepts, "Automatic" first."""
    return [AUTOMATIC, *get_sampler(sampler_name).schedules]


def _find_schedule_label(text: str) -> str | None:
    """A schedule's label from its label, id or alias (case-insensitive); None if not a supported one."""
    key = text.strip().lower()
    for schedule in SCHEDULES:
        if key in (schedule.label.lower(), schedule.name.lower(), *(a.lower() for a in schedule.aliases)):
            return schedule.label
    return None


def _find_omitted_schedule(text: str) -> tuple[str, str] | None:
    key = text.strip().lower()
    for schedule_id, (label, reason) in OMITTED_SCHEDULES.items():
        if key in (schedule_id, label.lower()):
            return label, reason
    return None


def _parse_schedule(schedule: str | None) -> str:
    if schedule is None or not schedule.strip():
        return AUTOMATIC
    label = _find_schedule_label(schedule)
    if label is not None:
        return label
    omitted = _find_omitted_schedule(schedule)
    why = f" ({omitted[0]} is not available: {omitted[1]})" if omitted else ""
    raise ValueError(f"unknown schedule type {schedule!r}{why}; choose one of: {_choices(schedule_labels())}")


def _split_combined(name: str) -> tuple[Sampler, str] | None:
    """"DPM++ 2M Karras" → (DPM++ 2M, "Karras"); "k_dpmpp_2m_ka" → (DPM++ 2M, "Karras"). None if not one."""
    lowered = name.strip().lower()
    for suffix, label in _LEGACY_ALIAS_SUFFIXES.items():
        if lowered.endswith(suffix) and lowered[: -len(suffix)] in _BY_KEY:
            return _BY_KEY[lowered[: -len(suffix)]], label
    labels = [(s.label, [s.label, s.name, *s.aliases]) for s in SCHEDULES]
    labels += [(label, [label]) for label, _ in OMITTED_SCHEDULES.values()]
    for label, spellings in labels:
        for spelling in spellings:
            tail = " " + spelling.lower()
            if lowered.endswith(tail):
                head = lowered[: -len(tail)].strip()
                if head in _BY_KEY:
                    return _BY_KEY[head], label
    return None


def validate(sampler_name: str, schedule: str) -> None:
    """Raise ValueError unless `schedule` (a label, id or alias) is valid for the sampler."""
    sampler = get_sampler(sampler_name)
    label = _parse_schedule(schedule)
    if label != AUTOMATIC and label not in sampler.schedules:
        raise ValueError(f"schedule type {label!r} is not available for sampler {sampler.name!r}; "
                         f"choose one of: {_choices(supported_schedules(sampler.name))}")


def resolve(sampler_name: str | None, schedule: str | None = None) -> tuple[str, str]:
    """Canonical (sampler name, schedule label) from what a user, a client or pasted infotext gave.

    Accepts names and aliases case-insensitively and the pre-1.9 combined names ("DPM++ 2M Karras").
    A schedule taken from a combined name that equals the sampler's A1111 default becomes "Automatic",
    as A1111 does; an explicit non-automatic `schedule` wins over the combined name's. No sampler means
    A1111's default, the first one. Raises ValueError naming the valid choices.
    """
    name = (sampler_name or "").strip() or SAMPLERS[0].name
    explicit = _parse_schedule(schedule)
    sampler = _BY_KEY.get(name.lower())
    if sampler is None:
        combined = _split_combined(name)
        if combined is None:
            raise ValueError(_unknown_sampler_message(sampler_name))
        sampler, from_name = combined
        if explicit == AUTOMATIC:
            explicit = from_name
            schedule_obj = _SCHEDULE_BY_LABEL.get(from_name)
            if schedule_obj is not None and schedule_obj.name == sampler.a1111_scheduler:
                explicit = AUTOMATIC
            elif schedule_obj is None:  # an A1111 schedule type diffusers cannot do
                label, reason = next(v for v in OMITTED_SCHEDULES.values() if v[0] == from_name)
                raise ValueError(f"schedule type {label!r} is not available ({reason}); "
                                 f"choose one of: {_choices(supported_schedules(sampler.name))}")
    validate(sampler.name, explicit)
    return sampler.name, explicit


def effective_schedule(sampler_name: str, schedule: str) -> str:
    """The schedule label the scheduler is built with: "Automatic" → the sampler's default."""
    sampler_name, label = resolve(sampler_name, schedule)
    return get_sampler(sampler_name).default_schedule if label == AUTOMATIC else label


def infotext_schedule(sampler_name: str, schedule: str) -> str | None:
    """The "Schedule type" A1111 writes into infotext, or None where it writes none.

    A1111 records the schedule its k-diffusion samplers actually used (``get_sigmas``): the chosen label, or
    for "Automatic" the sampler's default ("DPM++ 2M" → "Karras"); nothing when "Automatic" leaves the
    model's own spacing (Euler, Euler a, LMS, Heun, LCM) and nothing for the timestep samplers.
    """
    sampler_name, label = resolve(sampler_name, schedule)
    sampler = get_sampler(sampler_name)
    if sampler.ignores_schedule:
        return None
    if label == AUTOMATIC:
        return sampler.default_schedule if sampler.a1111_scheduler else None
    return label


# ---------------------------------------------------------------- building schedulers

# Options a model's saved scheduler config may carry that would change the sampling; reset where the class
# has them, so that only this module's overrides decide.
_RESETS: dict[str, Any] = {
    "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
    "use_lu_lambdas": False, "use_flow_sigmas": False, "use_dynamic_shifting": False, "thresholding": False,
    "timestep_type": "discrete", "interpolation_type": "linear", "final_sigmas_type": "zero",
    "sigma_min": None, "sigma_max": None, "shift_terminal": None, "clip_sample": False, "variance_type": None,
    "euler_at_final": False, "solver_order": 2, "lower_order_final": True,
}
_SIGMA_FLAGS = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas", "beta": "use_beta_sigmas"}


@functools.cache
def _init_parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.__init__).parameters) - {"self"}


@functools.cache
def _scheduler_class(class_name: str) -> type:
    import diffusers

    if class_name == "DPMSolverMultistepScheduler":
        return _kdiffusion_dpm_multistep_class()
    return getattr(diffusers, class_name)


@functools.cache
def _kdiffusion_dpm_multistep_class() -> type:
    """DPMSolverMultistepScheduler with k-diffusion's third-order SDE step (DPM++ 3M SDE).

    diffusers' ``sde-dpmsolver++`` third-order update weights D2 by
    ``alpha_t * ((1 - e^{-2h} - 2h) / (2h)^2 - 0.5)``; k-diffusion's ``sample_dpmpp_3m_sde`` (eta 1) uses
    ``-alpha_t * phi_3`` with ``phi_3 = phi_2 / 2h - 0.5``, i.e. ``alpha_t * ((1 - e^{-2h} - 2h) / (2h)^2 + 0.5)``,
    the O(h) weight a third-order term needs. This adds the missing ``alpha_t * D2``. Every other update is
    diffusers' own.
    """
    import torch
    from diffusers import DPMSolverMultistepScheduler

    class KDiffusionDPMSolverMultistepScheduler(DPMSolverMultistepScheduler):
        def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, noise=None,
                                                    **kwargs):
            x_t = super().multistep_dpm_solver_third_order_update(model_output_list, *args, sample=sample,
                                                                  noise=noise, **kwargs)
            if self.config.algorithm_type != "sde-dpmsolver++":
                return x_t
            sigmas = [self.sigmas[self.step_index + 1 - k] for k in range(4)]  # t, s0, s1, s2
            alphas_sigmas = [self._sigma_to_alpha_sigma_t(s) for s in sigmas]
            lambdas = [torch.log(a) - torch.log(s) for a, s in alphas_sigmas]
            h, h_0, h_1 = lambdas[0] - lambdas[1], lambdas[1] - lambdas[2], lambdas[2] - lambdas[3]
            r0, r1 = h_0 / h, h_1 / h
            m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
            d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
            d2 = (d1_0 - d1_1) / (r0 + r1)
            return x_t + alphas_sigmas[0][0] * d2

    KDiffusionDPMSolverMultistepScheduler.__name__ = "DPMSolverMultistepScheduler"
    KDiffusionDPMSolverMultistepScheduler.__qualname__ = "DPMSolverMultistepScheduler"
    return KDiffusionDPMSolverMultistepScheduler


def _zero_snr_betas(base_config: Mapping[str, Any]) -> list[float]:
    """Betas of the zero-terminal-SNR rescaled schedule (last alphas_cumprod 2**-24, as diffusers' Euler)."""
    from diffusers import EulerDiscreteScheduler

    reference = EulerDiscreteScheduler.from_config(dict(base_config), rescale_betas_zero_snr=True)
    alphas_cumprod = reference.alphas_cumprod.double()
    previous = alphas_cumprod.new_ones(alphas_cumprod.shape)
    previous[1:] = alphas_cumprod[:-1]
    return (1.0 - alphas_cumprod / previous).tolist()


def _overrides(sampler: Sampler, schedule_label: str, cls: type, base_config: Mapping[str, Any],
               steps: int | None) -> dict:
    params = _init_parameters(cls)
    overrides = {key: value for key, value in _RESETS.items() if key in params}
    if not sampler.ignores_schedule:
        schedule = _SCHEDULE_BY_LABEL[sampler.default_schedule if schedule_label == AUTOMATIC else schedule_label]
        if "timestep_spacing" in params:
            # For one step diffusers' "linspace" gives t = 0 (np.linspace(0, 999, 1)) where k-diffusion gives
            # t = 999; "trailing" gives 999, so for one step every k-diffusion schedule is "trailing".
            overrides["timestep_spacing"] = "trailing" if steps == 1 else schedule.spacing
        if schedule.sigmas is not None:
            overrides[_SIGMA_FLAGS[schedule.sigmas]] = True
    overrides.update(dict(sampler.overrides))
    if base_config.get("rescale_betas_zero_snr") and "rescale_betas_zero_snr" not in params:
        # The class cannot rescale by itself: hand it the rescaled betas.
        overrides["trained_betas"] = _zero_snr_betas(base_config)
    missing = sorted(set(overrides) - params)
    if missing:  # a diffusers upgrade removed an option this mapping relies on
        raise RuntimeError(f"{cls.__name__} has no option(s) {missing}; {sampler.name} cannot be built")
    return overrides


def create_scheduler(sampler_name: str, schedule: str, base_config: Mapping[str, Any], *,
                     eta: float | None = None, seed: int | list[int] | None = None, steps: int | None = None):
    """A new diffusers scheduler for this A1111 sampler and schedule type.

    `base_config` is the model's DDPM-style scheduler config; its training schedule and prediction type
    carry over. `eta`: None for A1111's defaults. Deterministic samplers ignore it (as A1111 does); the
    ancestral/SDE ones accept only 1.0, the value diffusers builds in; for DDIM pass it to the pipeline
    call too (see `call_kwargs`). `seed` seeds the Brownian noise of DPM++ SDE; other samplers take noise
    from the pipeline's generator. `steps`: the step count it will run; pass it, because a 1-step run of
    the Euler-family classes needs a different spacing (see `_overrides`). Returns a fresh object per call.
    """
    sampler_name, schedule_label = resolve(sampler_name, schedule)
    sampler = get_sampler(sampler_name)
    if eta is not None:
        if eta < 0:
            raise ValueError(f"eta must be 0 or more, not {eta}")
        if sampler.eta == "ancestral" and abs(eta - 1.0) > 1e-6:
            raise ValueError(f"sampler {sampler.name!r} only supports eta 1.0 in diffusers, not {eta}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be 1 or more, not {steps}")
    limit = dict(sampler.overrides).get("original_inference_steps")
    if steps is not None and limit is not None and steps > limit:
        raise ValueError(f"sampler {sampler.name!r} supports at most {limit} steps, not {steps}")
    cls = _scheduler_class(sampler.scheduler_class)
    overrides = _overrides(sampler, schedule_label, cls, base_config, steps)
    if seed is not None and "noise_sampler_seed" in _init_parameters(cls):
        overrides["noise_sampler_seed"] = seed
    # Only the keys this class knows: the base config may hold other schedulers' options (skip_prk_steps, ...).
    params = _init_parameters(cls)
    config = {key: value for key, value in dict(base_config).items() if key in params}
    config.update(overrides)
    try:
        key = json.dumps(config, sort_keys=True)
    except (TypeError, ValueError):  # not plain data (numpy betas, ...): build it directly
        return cls.from_config(config)
    # Several classes run set_timesteps(1000) in __init__ (about 0.3 s with Karras or Beta sigmas); copying a
    # cached, never-used prototype is cheap and gives every job its own object.
    return copy.deepcopy(_prototype(sampler.scheduler_class, key))


@functools.lru_cache(maxsize=64)
def _prototype(class_name: str, config_json: str):
    return _scheduler_class(class_name).from_config(json.loads(config_json))


def call_kwargs(sampler_name: str, *, eta: float | None = None) -> dict[str, Any]:
    """Extra pipeline-call arguments a sampler needs: DDIM's eta (A1111's default 0)."""
    sampler = get_sampler(resolve(sampler_name)[0])
    if sampler.eta == "ddim":
        return {"eta": 0.0 if eta is None else float(eta)}
    return {}


# ---------------------------------------------------------------- API listings


def api_samplers() -> list[dict]:
    """/sdapi/v1/samplers: [{"name", "aliases", "options"}], A1111's shape."""
    return [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.a1111_options)} for s in SAMPLERS]


def api_schedulers() -> list[dict]:
    """/sdapi/v1/schedulers: [{"name", "label", "aliases", "default_rho", "need_inner_model"}], A1111's shape
    (aliases is null where A1111 has none)."""
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None,
             "default_rho": s.default_rho, "need_inner_model": s.need_inner_model} for s in SCHEDULES]
