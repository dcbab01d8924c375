"""A1111 sampler and schedule-type names ↔ diffusers schedulers.

The table (which sampler runs on which diffusers class, with which options; what is left out and why) is
``sampler_table.py``. Here: names resolved as A1111 resolves them (aliases, any case, the pre-1.9 combined
names such as "DPM++ 2M Karras"), the schedule type infotext records, a fresh diffusers scheduler built for a
sampler and schedule type, and the API's listings. Asking for something diffusers cannot do raises
``ValueError`` naming what is available.

Nothing here imports a web framework; diffusers is imported only when a scheduler is built.
"""
from __future__ import annotations

import copy
import functools
import inspect
import json
from typing import Any, Mapping

from modules.diffusion.sampler_table import (AUTOMATIC, OMITTED_SAMPLERS, OMITTED_SCHEDULES, SAMPLERS, SCHEDULES,
                                             Sampler, Schedule)

__all__ = [
    "Sampler", "Schedule", "SAMPLERS", "SCHEDULES", "OMITTED_SAMPLERS", "OMITTED_SCHEDULES",
    "sampler_names", "schedule_labels", "get_sampler", "supported_schedules", "resolve", "validate",
    "effective_schedule", "infotext_schedule", "create_scheduler", "call_kwargs", "api_samplers", "api_schedulers",
]

# Lookups by label, by name or alias (lower case), and the aliases of samplers left out.
_SCHEDULE_BY_LABEL = {s.label: s for s in SCHEDULES}

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
    """The class a sampler's declared diffusers class name stands for: diffusers' own, except that the DPM-Solver
    multistep samplers run on its subclass with k-diffusion's third-order SDE step (DPM++ 3M SDE)."""
    import diffusers

    if class_name == "DPMSolverMultistepScheduler":
        from modules.diffusion.kdiffusion_dpm import KDiffusionDPMSolverMultistepScheduler

        return KDiffusionDPMSolverMultistepScheduler
    return getattr(diffusers, class_name)


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
