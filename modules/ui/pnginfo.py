"""The PNG Info tab: an image's generation parameters and other text metadata, shown as text, with the
"Send to" buttons (A1111 ui.py pnginfo_interface and extras.run_pnginfo)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
from PIL import Image

from modules import images
from modules.ui.common import PRIVATE, escape_multiline, message_html
from modules.ui.image_inputs import named_refusals

TARGETS = ("txt2img", "img2img", "inpaint", "extras")


@dataclass
class PngInfoTab:
    image: gr.Image
    html: gr.HTML
    infotext: gr.State          # the "parameters" text of the shown image ("" when it has none)
    send_buttons: dict[str, gr.Button]


def info_html(parameters: str | None, items: dict[str, str]) -> str:
    """Every text entry, its name and its value escaped: metadata is user text, never rendered as HTML."""
    entries = ({"parameters": parameters} if parameters is not None else {}) | items
    blocks = [f'<div class="pnginfo-item"><p><b>{escape_multiline(str(key))}</b></p>'
              f'<p class="pnginfo-text">{escape_multiline(str(value))}</p></div>' for key, value in entries.items()]
    if parameters is None:
        blocks.insert(0, message_html("No generation parameters found in this image.", "warning"))
    return "\n".join(blocks)


def read(image: Image.Image | None) -> tuple[str, str]:
    """The uploaded image → (HTML to show, its infotext or "")."""
    if image is None:
        return "", ""
    try:
        parameters, items = images.read_info(image)
    except ValueError as error:   # "metadata too large"
        return message_html(f"Could not read this image's metadata: {error}", "warning"), ""
    return info_html(parameters, items), parameters or ""


def create_tab() -> PngInfoTab:
    with gr.Row(equal_height=False, elem_id="pnginfo_row"):
        with gr.Column(variant="panel"):
            # image_mode=None: the file as uploaded, with its text chunks and EXIF, not a converted copy.
            image = named_refusals(gr.Image(label="Source", type="pil", image_mode=None,
                                            sources=["upload", "clipboard"], elem_id="pnginfo_image",
                                            interactive=True, height=512))
        with gr.Column(variant="panel"):
            html_info = gr.HTML("", elem_id="pnginfo_html_info", elem_classes=["pnginfo-panel"], js_on_load=None)
            with gr.Row(elem_id="pnginfo_send_buttons", elem_classes=["send-buttons"]):
                # A1111's element ids (infotext_utils.create_buttons)
                buttons = {target: gr.Button(f"Send to {target}", elem_id=f"{target}_tab", size="sm", min_width=0)
                           for target in TARGETS}
    infotext = gr.State("")
    image.change(read, inputs=[image], outputs=[html_info, infotext], show_progress="hidden",
                 api_visibility=PRIVATE)
    return PngInfoTab(image, html_info, infotext, buttons)
