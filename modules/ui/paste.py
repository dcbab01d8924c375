"""The ↙️ paste button: infotext (from the prompt box, else the last generation's params.txt) → field values."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from modules import infotext, samplers


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
    converted = infotext.infotext_to_request_fields(infotext.parse_infotext(text))
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
