"""A1111 sampler and schedule-type names.

The table (A1111's samplers, their options and schedule types) is ``sampler_table.py``; the samplers themselves
run in ``diffusion/ksampling/``. Here: names resolved as A1111 resolves them (aliases, any case, the pre-1.9
combined names such as "DPM++ 2M Karras"), the schedule type infotext records, and the API's listings. An
unknown name raises ``ValueError`` naming what is available.
"""
from __future__ import annotations

from modules.diffusion.sampler_table import AUTOMATIC, SAMPLERS, SCHEDULES, Sampler, Schedule

__all__ = [
    "Sampler", "Schedule", "SAMPLERS", "SCHEDULES", "sampler_names", "schedule_labels", "get_sampler",
    "supported_schedules", "resolve", "validate", "effective_schedule", "infotext_schedule", "api_samplers",
    "api_schedulers",
]

# Lookups by label, and by name or alias (lower case).
_SCHEDULE_BY_LABEL = {s.label: s for s in SCHEDULES}

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
    return f"unknown sampler {name!r}; choose one of: {_choices(sampler_names())}"


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


def _parse_schedule(schedule: str | None) -> str:
    if schedule is None or not schedule.strip():
        return AUTOMATIC
    label = _find_schedule_label(schedule)
    if label is not None:
        return label
    raise ValueError(f"unknown schedule type {schedule!r}; choose one of: {_choices(schedule_labels())}")


def _split_combined(name: str) -> tuple[Sampler, str] | None:
    """"DPM++ 2M Karras" → (DPM++ 2M, "Karras"); "k_dpmpp_2m_ka" → (DPM++ 2M, "Karras"). None if not one."""
    lowered = name.strip().lower()
    for suffix, label in _LEGACY_ALIAS_SUFFIXES.items():
        if lowered.endswith(suffix) and lowered[: -len(suffix)] in _BY_KEY:
            return _BY_KEY[lowered[: -len(suffix)]], label
    labels = [(s.label, [s.label, s.name, *s.aliases]) for s in SCHEDULES]
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
            if _SCHEDULE_BY_LABEL[from_name].name == sampler.a1111_scheduler:
                explicit = AUTOMATIC
    validate(sampler.name, explicit)
    return sampler.name, explicit


def effective_schedule(sampler_name: str, schedule: str) -> str:
    """The schedule the sampler runs: "Automatic" → the sampler's own, or "Automatic" where that is the model's
    uniform spacing (and for the timestep samplers, which take no schedule)."""
    sampler_name, label = resolve(sampler_name, schedule)
    sampler = get_sampler(sampler_name)
    if label == AUTOMATIC and not sampler.ignores_schedule:
        return sampler.default_schedule or AUTOMATIC
    return label


def infotext_schedule(sampler_name: str, schedule: str) -> str:
    """The "Schedule type" A1111 writes into infotext: the request's, replaced by the schedule its k-diffusion
    samplers resolved "Automatic" to ("DPM++ 2M" → "Karras"). Euler's "Automatic" stays "Automatic"."""
    return effective_schedule(sampler_name, schedule)


# ---------------------------------------------------------------- API listings


def api_samplers() -> list[dict]:
    """/sdapi/v1/samplers: [{"name", "aliases", "options"}], A1111's shape."""
    return [{"name": s.name, "aliases": list(s.aliases), "options": {k: str(v) for k, v in s.a1111_options}} for s in SAMPLERS]


def api_schedulers() -> list[dict]:
    """/sdapi/v1/schedulers: [{"name", "label", "aliases", "default_rho", "need_inner_model"}], A1111's shape
    (aliases is null where A1111 has none)."""
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None,
             "default_rho": s.default_rho, "need_inner_model": s.need_inner_model} for s in SCHEDULES]
