"""The ↙️ button of both generation tabs: the prompt box's infotext (or the last generation's) into the
tab's fields, its ControlNet units and its scripts' controls."""
from __future__ import annotations

import html
import logging

import gradio as gr

from modules.output import infotext
from modules.ui import controlnet, override_settings, paste
from modules.ui.common import escape_multiline

log = logging.getLogger(__name__)


def paste_handler(services, fields: dict, script_controls=None):
    """The ↙️ button: the prompt box's infotext (or the last generation's) into the tab's fields and, with
    `script_controls`, into the scripts' controls that declare `infotext_fields`."""
    def handler(prompt_text: str):
        try:
            text = paste.infotext_source(prompt_text, services.paths.params_file)
        except paste.NothingToPaste as error:
            gr.Warning(html.escape(str(error)), title="Paste")
            return {}
        warnings: list[str] = []
        try:
            raw = infotext.parse_infotext(text)
            parsed = paste.parsed_fields(raw, warnings)
        except Exception as error:  # noqa: BLE001 - odd text in the prompt box must not break the page
            log.warning("could not parse infotext: %s", error)
            gr.Warning(html.escape(f"Could not read generation parameters: {error}"), title="Paste")
            return {}
        services.scripts.callbacks.infotext_pasted(text, parsed)   # extensions may read or change the fields
        updates = {}
        for name, value in paste.pasted_values(services, parsed).items():
            if name in fields:   # as the component takes it (a radio's label, a slider's range)
                shown = paste.component_value(name, fields[name], value, warnings)
                if shown is not None:
                    updates[fields[name]] = shown
        updates.update(controlnet.paste_updates(services, parsed.get("controlnet_units"), fields, warnings,
                                                untick_others=False))
        if script_controls is not None:
            updates.update(script_controls.paste_updates(raw))
        if "override_settings" in fields:   # the settings it names (no "RNG" means GPU, as in A1111)
            updates[fields["override_settings"]] = override_settings.pasted(services.options, raw)
        if warnings:
            gr.Warning(escape_multiline("Not pasted: " + "\n".join(warnings)), title="Paste")
        return updates
    return handler
