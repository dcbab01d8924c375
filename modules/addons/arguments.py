"""Checking a script's positional arguments (they come from the UI or, unchecked, from API clients): each a clear
JobError (an invalid request) naming the script and the argument."""
from __future__ import annotations

from modules.jobs import JobError


def number(script: str, name: str, value, kind: type, low: float, high: float):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise JobError(f"{script}: {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise JobError(f"{script}: {name} must be between {low} and {high} (got {value})")
    return kind(value)


def choice(script: str, name: str, value, choices):
    if value not in choices:
        raise JobError(f"{script}: {name} must be one of {list(choices)}, got {value!r}")
    return value


def subset(script: str, name: str, value, choices) -> list:
    """A checkbox group's value (one string is taken as a list of one), in the choices' order; not empty."""
    chosen = [value] if isinstance(value, str) else value
    if not isinstance(chosen, (list, tuple)) or not chosen or any(item not in choices for item in chosen):
        raise JobError(f"{script}: {name} must be a list of {list(choices)}, got {value!r}")
    return [item for item in choices if item in chosen]
