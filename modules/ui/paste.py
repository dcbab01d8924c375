"""The ↙️ paste button and "Send to": infotext (from the prompt box, else the last generation's params.txt,
or an image's PNG Info) → field values."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from modules.output import infotext
from modules.diffusion import samplers

# A1111's inpaint infotext values, in the order of the request's integer fields (inpainting_fill 0–3,
# inpainting_mask_invert 0/1, inpaint_full_res False/True).
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
INPAINT_AREAS = ("Whole picture", "Only masked")


class NothingToPaste(Exception):
    pass


def infotext_source(prompt_text: str | None, params_file: Path) -> str:
    """A1111: the prompt box if it has text, else params.txt (written after each generation)."""
    if prompt_text and prompt_text.strip():
        return prompt_text
    try:
        text = params_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    if not text.strip():
        raise NothingToPaste("Nothing to paste: the prompt box is empty and there is no previous generation "
                             f"({params_file.name}) to read.")
    return text


def parsed_fields(parsed: dict, warnings: list[str]) -> dict[str, Any]:
    """GenerationRequest field names → values, from an infotext parsed with `infotext.parse_infotext`; what could
    not be used is described in `warnings`."""
    converted = infotext.infotext_to_request_fields(parsed)
    fields = dict(converted["fields"])
    warnings.extend(f"{key}: {reason}" for key, reason in converted.get("errors", {}).items())
    sampler, schedule = fields.get("sampler_name"), fields.get("scheduler")
    if sampler is not None:
        fields.pop("sampler_name"), fields.pop("scheduler", None)
        try:   # "DPM++ 2M Karras" → ("DPM++ 2M", "Karras"), as the dropdowns list them
            fields["sampler_name"], fields["scheduler"] = samplers.resolve(sampler, schedule)
        except ValueError as error:
            try:   # a schedule this sampler cannot do here: keep the sampler, schedule Automatic
                fields["sampler_name"], fields["scheduler"] = samplers.resolve(sampler, None)
                warnings.append(f"{error}; using Automatic")
            except ValueError as unknown:
                warnings.append(str(unknown))
    return fields


# Radio labels for request fields that the request holds as indices (or a bool).
CHOICE_LABELS = {"inpainting_fill": MASKED_CONTENT, "inpainting_mask_invert": MASK_MODES,
                 "inpaint_full_res": INPAINT_AREAS}


def component_value(name: str, component, value, warnings: list[str]):
    """A request value as `component` takes it; None when it cannot show it (then `warnings` says so)."""
    choices = getattr(component, "choices", None)
    if isinstance(component, (gr.Radio, gr.Dropdown)) and choices is not None:
        offered = [choice[1] if isinstance(choice, tuple) else choice for choice in choices]
        labels = CHOICE_LABELS.get(name)
        if getattr(component, "type", "value") == "index" and isinstance(value, (int, bool)):
            return offered[int(value)] if 0 <= int(value) < len(offered) else None
        if labels is not None and isinstance(value, (int, bool)) and labels[int(value)] in offered:
            return labels[int(value)]
        if getattr(component, "multiselect", False) or getattr(component, "allow_custom_value", False):
            return value
        if value not in offered:
            warnings.append(f"{getattr(component, 'label', None) or name}: {value!r} is not available here")
            return None
        return value
    if isinstance(component, gr.Slider):
        low, high = component.minimum, component.maximum
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
            clamped = min(max(value, low), high)
            warnings.append(f"{component.label or name}: {value} is outside {low}–{high}; using {clamped}")
            return clamped
    return value


def pasted_values(services, parsed: dict) -> dict[str, Any]:
    """Request fields parsed from infotext → the values the tab's components take (UI-only keys included):
    0 for "off" seed resizing, Extra/Hires/Refiner ticked when their fields are set, titles for checkpoints."""
    values = {name: value for name, value in parsed.items() if value is not None}
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        if name in values and values[name] <= 0:
            values[name] = 0
    if (values.get("subseed_strength") or 0) > 0 or (values.get("seed_resize_from_w") or 0) > 0:
        values["extra"] = True
    if values.get("hr_sampler_name"):
        try:
            values["hr_sampler_name"], values["hr_scheduler"] = samplers.resolve(values["hr_sampler_name"],
                                                                                 values.get("hr_scheduler"))
        except ValueError:
            values.pop("hr_sampler_name"), values.pop("hr_scheduler", None)
    if "refiner_checkpoint" in values:
        # "Refiner: name [hash]" → the dropdown's title; an unknown refiner is left as it was
        info = services.registry.find(str(values["refiner_checkpoint"]).split(" [")[0])
        info = info or services.registry.find(values["refiner_checkpoint"])
        if info is None:
            values.pop("refiner_checkpoint")
        else:
            values["refiner_checkpoint"], values["enable_refiner"] = info.title, True
    return values
