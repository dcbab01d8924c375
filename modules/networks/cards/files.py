"""The files beside a model that its card shows: the preview image, the description, the user metadata.

As A1111: the preview is `<stem>.png`, `<stem>.preview.png`, also .jpg/.jpeg/.webp/.gif, next to the file; the
description `<stem>.txt` or `<stem>.description.txt`; the user metadata `<stem>.json` ("description", "activation
text", "preferred weight", "negative text", "notes", and "vae" for checkpoints), checked before it is used or
written.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modules.untrusted import user_files
from modules.untrusted.json_file import read_json_object, write_json_atomically

log = logging.getLogger(__name__)

PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")

# User metadata: the keys A1111 writes, and what each may hold.
TEXT_KEYS = ("description", "activation text", "negative text", "notes")
WEIGHT_KEY = "preferred weight"
VAE_KEY = "vae"
KNOWN_KEYS = (*TEXT_KEYS[:2], WEIGHT_KEY, *TEXT_KEYS[2:], VAE_KEY)
MAX_TEXT = 20_000                # characters of one metadata value
MAX_DESCRIPTION_FILE = 64 * 1024  # bytes read from a <stem>.txt
MIN_WEIGHT, MAX_WEIGHT = 0.0, 2.0


# --------------------------------------------------------------------------- files beside a model

def without_extension(path: Path) -> Path:
    """The file without its extension, as A1111's `os.path.splitext(path)[0]`."""
    path = Path(path)
    return path.with_name(path.name[: len(path.name) - len(path.suffix)] if path.suffix else path.name)


def metadata_path(path: Path) -> Path:
    """A1111's user metadata file: `<stem>.json` next to the model file."""
    base = without_extension(path)
    return base.with_name(base.name + ".json")


def find_preview(path: Path) -> Path | None:
    """The first of `<stem>.png`, `<stem>.preview.png`, `<stem>.jpg`, ... that is a file (A1111's order)."""
    base = without_extension(path)
    for extension in PREVIEW_EXTENSIONS:
        for name in (f"{base.name}.{extension}", f"{base.name}.preview.{extension}"):
            candidate = base.with_name(name)
            if candidate != Path(path) and candidate.is_file():
                return candidate
    # A PNG textual-inversion embedding is its own picture (A1111 shows it as the card's preview).
    if Path(path).suffix.lower() == ".png" and Path(path).is_file():
        return Path(path)
    return None


def find_description(path: Path) -> str:
    """The text of `<stem>.txt` or `<stem>.description.txt` (A1111), or ""."""
    base = without_extension(path)
    for name in (f"{base.name}.txt", f"{base.name}.description.txt"):
        candidate = base.with_name(name)
        try:
            data = user_files.read_bytes(candidate, MAX_DESCRIPTION_FILE)
        except OSError:
            continue
        return data.decode("utf-8", errors="replace").strip()
    return ""


# --------------------------------------------------------------------------- user metadata

def _check_text(key: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected text, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{key}: longer than {MAX_TEXT} characters")
    return value


def _check_weight(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{WEIGHT_KEY}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{WEIGHT_KEY}: expected a number, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"{WEIGHT_KEY}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{WEIGHT_KEY}: must be a finite number")
    if not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise ValueError(f"{WEIGHT_KEY}: must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g} (got {value:g})")
    return value


def validate_user_metadata(data: dict, *, vae_choices: Iterable[str] | None = None) -> dict:
    """The known keys of `data`, checked and normalised; ValueError names the first bad key.

    Texts must be strings (None counts as ""); "preferred weight" a finite number 0–2 (or empty);
    "vae" one of `vae_choices` when those are given. Unknown keys are left out.
    """
    if not isinstance(data, dict):
        raise ValueError("user metadata must be an object")
    checked: dict[str, Any] = {}
    for key in TEXT_KEYS:
        if key in data:
            checked[key] = _check_text(key, data[key])
    if WEIGHT_KEY in data:
        weight = _check_weight(data[WEIGHT_KEY])
        if weight is not None:
            checked[WEIGHT_KEY] = weight
    if VAE_KEY in data and data[VAE_KEY] not in (None, ""):
        vae = _check_text(VAE_KEY, data[VAE_KEY])
        choices = list(vae_choices) if vae_choices is not None else None
        if choices is not None and vae not in choices:
            raise ValueError(f"{VAE_KEY}: unknown VAE {vae!r}")
        checked[VAE_KEY] = vae
    return checked


def read_user_metadata(path: Path) -> dict:
    """The user metadata of a model file (`<stem>.json`): known keys with valid values; {} if none.

    A damaged file or a bad value never breaks a listing: bad values are left out (and logged).
    """
    raw = read_json_object(metadata_path(path))
    result: dict[str, Any] = {}
    for key in KNOWN_KEYS:
        if key not in raw:
            continue
        try:
            result.update(validate_user_metadata({key: raw[key]}))
        except ValueError as error:
            log.warning("%s: ignoring %s", metadata_path(path), error)
    return result


def write_user_metadata(path: Path, data: dict, *, vae_choices: Iterable[str] | None = None) -> dict:
    """Validate `data` and write it to `<stem>.json` atomically; returns what was stored.

    Only known keys are taken from `data`; keys already in the file that this project does not edit (A1111
    writes e.g. "sd version") are kept. An empty text or weight removes that key.
    """
    checked = validate_user_metadata(data, vae_choices=vae_choices)
    target = metadata_path(path)
    stored = {key: value for key, value in read_json_object(target).items() if key not in KNOWN_KEYS}
    for key in KNOWN_KEYS:
        value = checked.get(key)
        if value not in (None, ""):
            stored[key] = value
    write_json_atomically(target, stored)
    return {key: stored[key] for key in KNOWN_KEYS if key in stored}
