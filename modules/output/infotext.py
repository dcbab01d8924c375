"""A1111 infotext: the "parameters" text stored with every generated image.

Writing follows A1111 ``processing.create_infotext``; parsing follows
``infotext_utils.parse_generation_parameters`` (reference §4). Parsing is
written so that hostile text (unbalanced quotes, megabytes of one word) is
handled in linear time: A1111's regex, run with ``findall`` over such a line,
is quadratic and takes minutes on 64 KiB.
"""
from __future__ import annotations

import json
import math
import re

from modules.controlnet.units import MAX_UNITS as MAX_CONTROLNET_UNITS, parse_infotext_value as parse_controlnet_value

# A1111's fixed key order. Keys not listed here (A1111's extra_generation_params)
# are written in insertion order between "Tiling" and "Version".
INFOTEXT_KEY_ORDER: tuple[str, ...] = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed",
    "Face restoration", "Size", "Model hash", "Model", "FP8 weight",
    "Cache FP16 weight for LoRA", "VAE hash", "VAE", "Variation seed",
    "Variation seed strength", "Seed resize from", "Denoising strength",
    "Conditional mask weight", "Clip skip", "ENSD", "Token merging ratio",
    "Token merging ratio hr", "Init image hash", "RNG", "Tiling",
    "Version", "User",
)
_TAIL_KEYS = ("Version", "User")
_FIXED_KEYS = INFOTEXT_KEY_ORDER[: -len(_TAIL_KEYS)]

# Schedule labels that pre-1.9 infotext glued onto the sampler name
# ("DPM++ 2M Karras"). Longest first so "SGM Uniform" wins over "Uniform".
SCHEDULE_LABELS: tuple[str, ...] = tuple(sorted((
    "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform",
    "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM", "Beta",
), key=len, reverse=True))

RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")

# Only this much of the parameters line is parsed; real ones are a few KiB.
MAX_PARAMS_LINE = 64 * 1024

# A1111 fills these in when the infotext lacks them (parse_generation_parameters).
_DEFAULTS: dict[str, object] = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
}


# ---------------------------------------------------------------- writing

def quote(value) -> str:
    """A1111 ``infotext_utils.quote``: JSON-quote a value that would break the
    "Key: value, ..." line. Also quotes a value starting with '"' (A1111 does
    not), because A1111's own parser would strip such quotes on the way back."""
    text = str(value)
    if "," in text or ":" in text or "\n" in text or text.startswith('"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    """A1111 ``infotext_utils.unquote``: undo ``quote``; anything else unchanged."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def create_infotext(prompt: str, negative_prompt: str, params: dict[str, object],
                    extra_params: dict[str, object] | None = None) -> str:
    """Build the A1111 infotext. ``params`` and ``extra_params`` are keyed by
    infotext key; None values are left out. Known keys take A1111's fixed slots
    (an extra param with a known key, e.g. "Denoising strength", lands in its
    slot, as A1111's dict spread does); other keys follow in insertion order,
    params' first, then Version and User."""
    extra_params = extra_params or {}
    merged: dict[str, object] = {key: params.get(key) for key in _FIXED_KEYS}
    for source in (params, extra_params):
        for key, value in source.items():
            if key not in _TAIL_KEYS:
                merged[key] = value
    for key in _TAIL_KEYS:
        merged[key] = params[key] if key in params else extra_params.get(key)

    params_line = ", ".join(
        key if key == value else f"{key}: {quote(value)}"
        for key, value in merged.items() if value is not None
    )
    negative_line = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_line}\n{params_line}".strip()


# ---------------------------------------------------------------- parsing

def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"  # exactly what `\w` matches in a str pattern


def find_params(line: str) -> list[tuple[str, str]]:
    """Same result as ``RE_PARAM.findall(line)``, in linear time.

    findall tries every start position, and at each one the key part
    ``\\w[\\w \\-/]+:`` scans to the end of the run of key characters; on a
    long run without ':' that is quadratic. A match at position j exists exactly
    when, after skipping whitespace, a word character starts a run of key
    characters (at least 2 long) that ends at ':' (the value part always matches
    something). That test is O(1) with two precomputed tables, so the regex only
    runs where it is known to match."""
    n = len(line)
    run_end = [n] * (n + 1)   # first index >= i outside [\w \-/]
    space_end = [n] * (n + 1)  # first index >= i that is not whitespace
    for i in range(n - 1, -1, -1):
        ch = line[i]
        run_end[i] = run_end[i + 1] if (_is_word(ch) or ch in " -/") else i
        space_end[i] = space_end[i + 1] if ch.isspace() else i

    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < n:
        k = space_end[pos]
        if k + 1 < n and _is_word(line[k]):
            colon = run_end[k + 1]
            if colon > k + 1 and colon < n and line[colon] == ":":
                match = RE_PARAM.match(line, pos)
                if match is not None:  # always, by the argument above
                    pairs.append(match.groups())
                    pos = match.end()
                    continue
        pos += 1
    return pairs


def split_legacy_sampler(sampler: str) -> tuple[str, str | None]:
    """"DPM++ 2M Karras" -> ("DPM++ 2M", "Karras"); names without a schedule
    suffix come back unchanged with None."""
    for label in SCHEDULE_LABELS:
        if sampler.endswith(" " + label) and len(sampler) > len(label) + 1:
            return sampler[: -len(label) - 1], label
    return sampler, None


def _version_tuple(text: str) -> tuple[int, ...] | None:
    """"v1.7.0-225-gabc" -> (1, 7, 0, 225); "v1.10.1" -> (1, 10, 1, 0)."""
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)(?:-(\d+))?", text or "")
    if match is None:
        return None
    return tuple(int(g or 0) for g in match.groups())


def _backcompat(res: dict[str, object]) -> None:
    """A1111 ``infotext_versions.backcompat``: old versions behaved differently;
    flag those behaviours so a pasted infotext reproduces the old image."""
    version = _version_tuple(str(res.get("Version", "")))
    if version is None:
        return
    if version < (1, 6, 0, 0) and "[" in str(res.get("Prompt", "")):
        res["Old prompt editing timelines"] = True
    if version < (1, 6, 0, 0) and res.get("Sampler") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if version < (1, 7, 0, 225):
        res["Downcast alphas_cumprod"] = True
    if version < (1, 8, 0, 0) and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = True


def parse_infotext(text: str) -> dict[str, object]:
    """Parse infotext like A1111's ``parse_generation_parameters`` (without the
    styles and option-dependent steps). Never raises on malformed text: what
    cannot be read is left out. Values stay strings, as in A1111."""
    lines = str(text or "").replace("\r\n", "\n").strip().split("\n")
    last = lines[-1][:MAX_PARAMS_LINE]
    pairs = find_params(last)
    if len(pairs) >= 3:
        lines = lines[:-1]
    else:
        pairs = []

    prompt: list[str] = []
    negative: list[str] = []
    done_with_prompt = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):  # A1111 strips the label on every such line
            done_with_prompt = True
            line = line[len("Negative prompt:"):].strip()
        target = negative if done_with_prompt else prompt
        if target or line:  # A1111 adds no separator while the text is still empty
            target.append(line)

    res: dict[str, object] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in pairs:
        if not value:  # A1111 drops "Key: " (its v[0] raises and is caught)
            continue
        if value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        size = RE_IMAGESIZE.match(value)
        if size is not None:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value

    hypernet = res.get("Hypernet")  # pre-2023 infotext; A1111 turns it into prompt syntax
    if hypernet is not None:
        res["Prompt"] = f'{res["Prompt"]}<hypernet:{hypernet}:{res.get("Hypernet strength", "1.0")}>'

    sampler = res.get("Sampler")
    if "Schedule type" not in res and isinstance(sampler, str):
        name, schedule = split_legacy_sampler(sampler)
        if schedule is not None:
            res["Sampler"], res["Schedule type"] = name, schedule

    for key, value in _DEFAULTS.items():
        res.setdefault(key, value)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False
    _backcompat(res)
    return res


# ---------------------------------------------------------------- to request fields

def _to_int(value) -> int:
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,20}", text):
        raise ValueError(f"not an integer: {value!r}")
    return int(text)


def _to_float(value) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ValueError(f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _to_bool(value) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"not True/False: {value!r}")


def _to_text(value) -> str:
    return str(value)


def _choice(names: tuple[str, ...]):
    """A named choice written in the infotext → its index (A1111's radio buttons)."""
    def convert(value) -> int:
        text = str(value).strip()
        if text not in names:
            raise ValueError(f"not one of {', '.join(names)}: {value!r}")
        return names.index(text)
    return convert


def _only_masked(value) -> bool:
    return _choice(("Whole picture", "Only masked"))(value) == 1


# (infotext key, request field, converter, value that means "not set")
_REQUEST_FIELDS = (
    ("Prompt", "prompt", _to_text, None),
    ("Negative prompt", "negative_prompt", _to_text, None),
    ("Steps", "steps", _to_int, None),
    ("Sampler", "sampler_name", _to_text, None),
    ("Schedule type", "scheduler", _to_text, None),
    ("CFG scale", "cfg_scale", _to_float, None),
    ("Image CFG scale", "image_cfg_scale", _to_float, None),
    ("Seed", "seed", _to_int, None),
    ("Size-1", "width", _to_int, None),
    ("Size-2", "height", _to_int, None),
    ("Variation seed", "subseed", _to_int, None),
    ("Variation seed strength", "subseed_strength", _to_float, None),
    # A1111's seed.py maps -1 to _h and -2 to _w (swapped); the infotext is
    # written as "WxH", so -1 is the width. We map it the right way round.
    ("Seed resize from-1", "seed_resize_from_w", _to_int, None),
    ("Seed resize from-2", "seed_resize_from_h", _to_int, None),
    ("Clip skip", "clip_skip", _to_int, None),
    ("Tiling", "tiling", _to_bool, None),
    ("Denoising strength", "denoising_strength", _to_float, None),
    ("Hires upscale", "hr_scale", _to_float, None),
    ("Hires upscaler", "hr_upscaler", _to_text, None),
    ("Hires steps", "hr_second_pass_steps", _to_int, None),
    ("Hires resize-1", "hr_resize_x", _to_int, None),
    ("Hires resize-2", "hr_resize_y", _to_int, None),
    ("Hires sampler", "hr_sampler_name", _to_text, "Use same sampler"),
    ("Hires schedule type", "hr_scheduler", _to_text, "Use same scheduler"),
    ("Hires checkpoint", "hr_checkpoint_name", _to_text, "Use same checkpoint"),
    ("Hires prompt", "hr_prompt", _to_text, ""),
    ("Hires negative prompt", "hr_negative_prompt", _to_text, ""),
    ("Mask blur", "mask_blur", _to_int, None),
    ("Mask mode", "inpainting_mask_invert", _choice(("Inpaint masked", "Inpaint not masked")), None),
    ("Masked content", "inpainting_fill", _choice(("fill", "original", "latent noise", "latent nothing")), None),
    ("Inpaint area", "inpaint_full_res", _only_masked, None),
    ("Masked area padding", "inpaint_full_res_padding", _to_int, None),
    ("Refiner", "refiner_checkpoint", _to_text, None),
    ("Refiner switch at", "refiner_switch_at", _to_float, None),
)


# Infotext keys that are settings (A1111's OptionInfo(infotext=...) and infotext_to_setting_name_mapping): pasting
# an infotext overrides these settings for the request, as A1111's get_override_settings does. "RNG" is among
# A1111's defaults, so an infotext without it means "GPU".
SETTINGS_FROM_INFOTEXT: dict[str, str] = {
    "RNG": "randn_source", "ENSD": "eta_noise_seed_delta", "Eta": "eta_ancestral", "Eta DDIM": "eta_ddim",
    "Sigma churn": "s_churn", "Sigma tmin": "s_tmin", "Sigma tmax": "s_tmax", "Sigma noise": "s_noise",
    "Schedule min sigma": "sigma_min", "Schedule max sigma": "sigma_max", "Schedule rho": "rho",
    "Discard penultimate sigma": "always_discard_next_to_last_sigma", "SGM noise multiplier": "sgm_noise_multiplier",
    "Beta schedule alpha": "beta_dist_alpha", "Beta schedule beta": "beta_dist_beta",
    "UniPC variant": "uni_pc_variant", "UniPC skip type": "uni_pc_skip_type", "UniPC order": "uni_pc_order",
    "UniPC lower order final": "uni_pc_lower_order_final", "Emphasis": "emphasis",
}


def setting_value(value, current):
    """An infotext value as a setting of `current`'s type takes it; ValueError when it cannot."""
    if isinstance(current, bool):
        return _to_bool(value)
    if isinstance(current, (int, float, str)):
        try:
            return type(current)(value)
        except (TypeError, ValueError):
            raise ValueError(f"not a {type(current).__name__}: {value!r}") from None
    return value


def infotext_to_settings(parsed: dict, current: dict) -> dict:
    """The settings a pasted infotext names (as `parse_infotext` returns them, defaults filled in), converted to
    the type of each setting's `current` value, where they differ from it."""
    settings = {}
    for key, name in SETTINGS_FROM_INFOTEXT.items():
        if key not in parsed or name not in current:
            continue
        try:
            value = setting_value(parsed[key], current[name])
        except ValueError:
            continue
        if value != current[name]:
            settings[name] = value
    return settings


def infotext_to_request_fields(parsed: dict) -> dict:
    """Map a ``parse_infotext`` result to plain request field names with typed
    values. Returns {"fields": {...}, "errors": {infotext key: reason}}; a key
    whose value cannot be converted is left out of fields and named in errors."""
    fields: dict[str, object] = {}
    errors: dict[str, str] = {}
    for key, field, convert, unset in _REQUEST_FIELDS:
        if key not in parsed or parsed[key] == unset:
            continue
        try:
            fields[field] = convert(parsed[key])
        except ValueError as exc:
            errors[key] = str(exc)

    # "Size: 512x" does not split into Size-1/-2; say so instead of dropping it.
    for key in ("Size", "Hires resize", "Seed resize from"):
        if key in parsed and f"{key}-1" not in parsed:
            errors[key] = f"not WIDTHxHEIGHT: {parsed[key]!r}"

    # The ControlNet extension's "ControlNet 0: "Module: ..., Model: ..."" keys, numbered over enabled units.
    units = []
    for number in range(MAX_CONTROLNET_UNITS):
        value = parsed.get(f"ControlNet {number}")
        if value is None:
            break
        try:
            units.append({"enabled": True, **parse_controlnet_value(str(value))})
        except ValueError as exc:
            errors[f"ControlNet {number}"] = str(exc)
    if units:
        fields["controlnet_units"] = units

    # A1111's txt2img paste rule for the hires checkbox.
    # (A1111 also counts "Hires resize-1", which its defaults always fill in; we
    # count it only when it is set, so an img2img infotext does not enable hires.)
    if "Denoising strength" in parsed and (
            any(k in parsed for k in ("Hires upscale", "Hires upscaler", "Hires steps"))
            or parsed.get("Hires resize-1") not in (None, 0, "0")):
        fields["enable_hr"] = True
    return {"fields": fields, "errors": errors}
