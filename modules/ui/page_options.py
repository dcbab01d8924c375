"""A1111's `opts` in the page: the settings as JSON in a hidden textbox (`settings_json`, A1111's id), read by
a1111.js into `window.opts` on each page load and again after every event that saves settings (Apply settings,
the quicksettings in the top bar); a1111.js then runs the extensions' `onOptionsChanged` callbacks."""
from __future__ import annotations

import json
from functools import partial

import gradio as gr
from gradio.events import EventListener

from modules.ui.common import PRIVATE

# Chained after the events of these elements (the Settings tab's Apply button) and of the top bar's components.
SAVING_ELEMENTS = ("settings_submit",)
RECEIVE_JS = "(text) => { window.webuiReceiveOptions(text); }"


def options_json(options) -> str:
    """Every setting's current value (A1111's settings_json); a value JSON cannot hold is written as text."""
    return json.dumps(options.as_dict(), default=str, ensure_ascii=False)


def connect(demo: gr.Blocks, services, topbar) -> None:
    """Call inside the page's Blocks, after every tab is built."""
    box = gr.Textbox(visible=False, elem_id="settings_json")
    quiet = {"show_progress": "hidden", "api_visibility": PRIVATE, "queue": False}

    def fill():
        return options_json(services.options)

    demo.load(fill, outputs=[box], **quiet).then(None, inputs=[box], js=RECEIVE_JS, **quiet)
    saving = {block._id for block in demo.blocks.values() if getattr(block, "elem_id", None) in SAVING_ELEMENTS}
    saving |= {component._id for component in (topbar.checkpoint, topbar.vae, *topbar.settings.values())
               if component is not None}
    for index, fn in list(demo.fns.items()):
        if fn.fn is not None and any(target in saving for target, _ in fn.targets):
            trigger = demo.blocks[next(target for target, _ in fn.targets if target in saving)]
            after(index, trigger)(fill, outputs=[box], **quiet).then(None, inputs=[box], js=RECEIVE_JS, **quiet)


def after(fn_index: int, trigger):
    """`.then` of an event registered elsewhere (Gradio returns it only to the code that registered the event)."""
    return partial(EventListener("then", trigger_after=fn_index, trigger_only_on_success=False,
                                 trigger_only_on_failure=False, has_trigger=False).listener, trigger)
