"""The output panel of a generation tab: progress, live preview, gallery and infotext (A1111 ui_common)."""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from modules.ui import gallery_buttons
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
    tools: gallery_buttons.GalleryButtons | None = None   # 📂 💾 🗃️ (gallery_buttons.py), with `services`


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


def create_output_panel(tabname: str, services=None) -> OutputPanel:
    """With `services`, A1111's 📂 💾 🗃️ buttons come before the "Send to" ones."""
    with gr.Column(elem_id=f"{tabname}_results", elem_classes=["results"]):
        progress = gr.HTML("", elem_id=f"{tabname}_progress", elem_classes=["progress-area"], visible=False,
                           js_on_load=None)
        preview = gr.Image(None, elem_id=f"{tabname}_live_preview", show_label=False, interactive=False,
                           visible=False, format="jpeg", buttons=[], height=512)
        gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{tabname}_gallery", columns=4,
                             format="png", object_fit="contain", preview=True, height=512, interactive=False)
        with gr.Row(elem_id=f"{tabname}_send_buttons", elem_classes=["send-buttons"]):
            tools = gallery_buttons.create(services, tabname) if services is not None else None
            send_buttons = {target: gr.Button(f"Send to {target}", elem_id=f"{tabname}_send_to_{target}",
                                              size="sm", min_width=0)
                            for target in SEND_TARGETS.get(tabname, ())}
        if tools is not None:
            downloads = gr.File(None, file_count="multiple", interactive=False, show_label=False, visible=False,
                                elem_id=f"download_files_{tabname}")
            html_log = gr.HTML("", elem_id=f"html_log_{tabname}", elem_classes=["html-log"], js_on_load=None)
        info = gr.HTML("", elem_id=f"html_info_{tabname}", elem_classes=["infotext-panel"], js_on_load=None)
    generation = gr.State({})
    selected = gr.State(None)
    panel = OutputPanel(progress, preview, gallery, info, generation, selected, send_buttons, tools)
    if tools is not None:
        gallery_buttons.connect(services, tabname, tools, gallery, generation, selected, downloads, html_log)

    def show_selected(generation: dict, evt: gr.SelectData):
        infotexts = (generation or {}).get("infotexts") or []
        index = evt.index if isinstance(evt.index, int) else None
        if index is None or not 0 <= index < len(infotexts):
            return gr.skip(), None
        return infotext_html(infotexts[index], generation.get("seconds")), index

    gallery.select(show_selected, inputs=[generation], outputs=[info, selected], queue=False,
                   show_progress="hidden", api_visibility=PRIVATE)
    return panel


# What 💾 writes to log.csv besides the infotext (A1111 reads them from the generation's info JSON).
LOG_INFO_KEYS = ("width", "height", "sampler_name", "cfg_scale", "steps", "sd_model_name", "sd_model_hash")


def generation_state(result, seconds: float) -> dict:
    info = getattr(result, "info", None) or {}
    return {"infotexts": list(result.infotexts), "seeds": list(result.seeds), "subseeds": list(result.subseeds),
            "index_of_first_image": result.index_of_first_image, "seconds": seconds,
            "info": {key: info[key] for key in LOG_INFO_KEYS if key in info},
            "saved": list(getattr(result, "saved", None) or [])}


def seed_of_selected(generation: dict, selected: int | None, key: str = "seeds") -> int | None:
    """The seed (or variation seed) behind the picked gallery image; the grid counts as the first image."""
    values = (generation or {}).get(key) or []
    if not values:
        return None
    first = generation.get("index_of_first_image", 0)
    index = (selected or 0) - first
    return values[index] if 0 <= index < len(values) else values[0]
