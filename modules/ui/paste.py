"""The ↙️ paste button and "Send to": infotext (from the prompt box, else the last generation's params.txt,
or an image's PNG Info) → field values."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from modules import infotext, samplers

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


def request_fields(text: str, warnings: list[str]) -> dict[str, Any]:
    """GenerationRequest field names → values parsed from A1111 infotext; what could not be used is
    described in `warnings`."""
    return parsed_fields(infotext.parse_infotext(text), warnings)


def parsed_fields(parsed: dict, warnings: list[str]) -> dict[str, Any]:
    """`request_fields` for an infotext already parsed with `infotext.parse_infotext`."""
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


def inpaint_fields(parsed: dict, warnings: list[str]) -> dict[str, Any]:
    """A1111's inpaint keys (Mask blur, Mask mode, Masked content, Inpaint area, Masked area padding) →
    request fields (integers and a bool, as the request takes them); parse_infotext fills in A1111's defaults
    for the ones an infotext lacks."""
    fields: dict[str, Any] = {}
    for key, field, labels in (("Masked content", "inpainting_fill", MASKED_CONTENT),
                               ("Mask mode", "inpainting_mask_invert", MASK_MODES),
                               ("Inpaint area", "inpaint_full_res", INPAINT_AREAS)):
        if key not in parsed:
            continue
        if parsed[key] in labels:
            index = labels.index(parsed[key])
            fields[field] = bool(index) if field == "inpaint_full_res" else index
        else:
            warnings.append(f"{key}: not one of {', '.join(labels)}: {parsed[key]!r}")
    for key, field in (("Mask blur", "mask_blur"), ("Masked area padding", "inpaint_full_res_padding")):
        if key in parsed:
            text = str(parsed[key]).strip()
            if text.isdigit():
                fields[field] = int(text)
            else:
                warnings.append(f"{key}: not a whole number: {parsed[key]!r}")
    return fields
