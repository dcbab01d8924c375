"""The output panel of a generation tab: progress, live preview, gallery and infotext (A1111 ui_common)."""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from modules.ui.common import PRIVATE, escape_multiline


@dataclass
class OutputPanel:
    progress: gr.HTML
    preview: gr.Image
    gallery: gr.Gallery
    info: gr.HTML
    generation: gr.State     # what the last result needs later: infotexts, seeds, subseeds, first image index
    selected: gr.State       # index of the gallery image the user picked (None = the first one)
    send_buttons: dict[str, gr.Button] = field(default_factory=dict)   # target ("img2img", …) → button; send_to.py


# The "Send to" buttons under each gallery, as A1111 (plus txt2img from img2img and extras).
SEND_TARGETS = {"txt2img": ("img2img", "inpaint", "extras"), "img2img": ("txt2img", "img2img", "inpaint", "extras"),
                "extras": ("txt2img", "img2img", "inpaint")}


def infotext_html(text: str, seconds: float | None = None) -> str:
    """The infotext is user text (the prompt): always escaped, never rendered as HTML."""
    body = f'<div class="infotext">{escape_multiline(text)}</div>' if text else ""
    if seconds is not None:
        body += f'<div class="performance">Time taken: {seconds:.1f} sec.</div>'
    return body


def error_html(message: str) -> str:
    return f'<div class="error">{escape_multiline(message)}</div>'


def create_output_panel(tabname: str) -> OutputPanel:
    with gr.Column(elem_id=f"{tabname}_results", elem_classes=["results"]):
        progress = gr.HTML("", elem_id=f"{tabname}_progress", elem_classes=["progress-area"], visible=False,
                           js_on_load=None)
        preview = gr.Image(None, elem_id=f"{tabname}_live_preview", show_label=False, interactive=False,
                           visible=False, format="jpeg", buttons=[], height=512)
        gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{tabname}_gallery", columns=4,
                             format="png", object_fit="contain", preview=True, height=512, interactive=False)
        with gr.Row(elem_id=f"{tabname}_send_buttons", elem_classes=["send-buttons"]):
            send_buttons = {target: gr.Button(f"Send to {target}", elem_id=f"{tabname}_send_to_{target}",
                                              size="sm", min_width=0)
                            for target in SEND_TARGETS.get(tabname, ())}
        info = gr.HTML("", elem_id=f"html_info_{tabname}", elem_classes=["infotext-panel"], js_on_load=None)
    generation = gr.State({})
    selected = gr.State(None)
    panel = OutputPanel(progress, preview, gallery, info, generation, selected, send_buttons)

    def show_selected(generation: dict, evt: gr.SelectData):
        infotexts = (generation or {}).get("infotexts") or []
        index = evt.index if isinstance(evt.index, int) else None
        if index is None or not 0 <= index < len(infotexts):
            return gr.skip(), None
        return infotext_html(infotexts[index], generation.get("seconds")), index

    gallery.select(show_selected, inputs=[generation], outputs=[info, selected], queue=False,
                   show_progress="hidden", api_visibility=PRIVATE)
    return panel


def generation_state(result, seconds: float) -> dict:
    return {"infotexts": list(result.infotexts), "seeds": list(result.seeds), "subseeds": list(result.subseeds),
            "index_of_first_image": result.index_of_first_image, "seconds": seconds}


def seed_of_selected(generation: dict, selected: int | None, key: str = "seeds") -> int | None:
    """The seed (or variation seed) behind the picked gallery image; the grid counts as the first image."""
    values = (generation or {}).get(key) or []
    if not values:
        return None
    first = generation.get("index_of_first_image", 0)
    index = (selected or 0) - first
    return values[index] if 0 <= index < len(values) else values[0]
