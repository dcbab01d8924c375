"""A1111's "Override settings" box of the generation tabs: the settings a pasted infotext names ("RNG: CPU",
"ENSD: 31337", …) that differ from the saved ones, shown after a paste and applied to the tab's generations until
removed from the box (A1111's create_override_settings_dropdown)."""
from __future__ import annotations

from typing import Any

import gradio as gr

from modules.output import infotext

_KEY_OF_SETTING = {setting: key for key, setting in infotext.SETTINGS_FROM_INFOTEXT.items()}


def create(tabname: str) -> gr.Dropdown:
    return gr.Dropdown([], value=[], label="Override settings", visible=False, multiselect=True,
                       elem_id=f"{tabname}_override_settings")


def _current(options) -> dict[str, Any]:
    return {name: getattr(options, name) for name in _KEY_OF_SETTING if hasattr(options, name)}


def pasted(options, parsed: dict) -> dict:
    """The box's update for a pasted infotext (`infotext.parse_infotext`'s result): its settings that differ from
    `options`' values, as "Key: value" entries; hidden when there are none."""
    entries = [f"{_KEY_OF_SETTING[name]}: {value}"
               for name, value in infotext.infotext_to_settings(parsed, _current(options)).items()]
    return gr.update(choices=entries, value=entries, visible=bool(entries))


def to_overrides(options, entries: list[str] | None) -> dict[str, Any]:
    """The box's entries → {setting: value}, the request's option overrides."""
    current = _current(options)
    overrides = {}
    for entry in entries or []:
        key, _, value = str(entry).partition(": ")
        name = infotext.SETTINGS_FROM_INFOTEXT.get(key)
        if name in current:
            try:
                overrides[name] = infotext.setting_value(value, current[name])
            except ValueError:
                continue
    return overrides
