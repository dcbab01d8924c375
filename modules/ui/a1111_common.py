"""A1111's `modules.ui_common` for extensions: the 🔄 button that refreshes a component's choices, the output panel
of a generation tab, the 💾 save of gallery images (`save_files`, through `modules/output/gallery_files.py`, the
same code as the tabs' 💾), and small HTML helpers.
"""
from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass

import gradio as gr

from modules import shared
from modules.output import gallery_files
from modules.ui import gallery_buttons, output
from modules.ui.a1111_infotext import image_from_url_text
from modules.ui.common import PRIVATE, tool_button

log = logging.getLogger(__name__)

folder_symbol = "\U0001f4c2"   # 📂
refresh_symbol = "\U0001f504"  # 🔄


def plaintext_to_html(text, classname=None) -> str:
    """User text as an HTML paragraph, escaped, lines kept."""
    content = "<br>\n".join(html.escape(line) for line in str(text).split("\n"))
    return f"<p class='{html.escape(classname, quote=True)}'>{content}</p>" if classname else f"<p>{content}</p>"


def update_generation_info(generation_info, html_info, img_index):
    """The infotext of gallery image `img_index` from A1111's generation info JSON, as HTML (else `html_info`)."""
    try:
        infotexts = json.loads(generation_info)["infotexts"]
        if 0 <= img_index < len(infotexts):
            return plaintext_to_html(infotexts[img_index]), gr.update()
    except (TypeError, ValueError, KeyError):
        pass
    return html_info, gr.update()


def create_refresh_button(refresh_component, refresh_method, refreshed_args, elem_id):
    """A1111's 🔄: calls `refresh_method()`, then sets `refreshed_args` (a dict, or a function giving one, e.g.
    `{"choices": ...}`) on the component(s)."""
    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]

    def refresh():
        refresh_method()
        args = (refreshed_args() if callable(refreshed_args) else refreshed_args) or {}
        for key, value in args.items():
            for component in components:
                setattr(component, key, value)   # a page loaded later is built with them (as A1111)
        updates = [gr.update(**args) for _ in components]
        return updates if len(updates) > 1 else updates[0]

    button = tool_button(refresh_symbol, elem_id)
    button.click(refresh, inputs=[], outputs=components, show_progress="hidden", api_visibility=PRIVATE)
    return button


def save_files(js_data, images, do_make_zip, index):
    """A1111's 💾/🗃️: save gallery `images` (files, `(image, caption)` pairs, …) described by the generation info
    JSON `js_data` (its `infotexts`, `index_of_first_image`, width, height, sampler_name, cfg_scale, steps,
    sd_model_name, sd_model_hash) into the `outdir_save` folder, with `log.csv` and, with `do_make_zip`, a zip.
    `index` is the picked image (-1: all). Returns the download list's update and an HTML line."""
    services = shared.services()
    data = json.loads(js_data) if isinstance(js_data, str) else dict(js_data or {})
    info = {key: data[key] for key in output.LOG_INFO_KEYS if key in data}
    generation = {"infotexts": data.get("infotexts") or [], "index_of_first_image": data.get("index_of_first_image", 0),
                  "seeds": data.get("all_seeds") or [], "info": info}
    pictures = [image_from_url_text(item) for item in images or []]
    try:
        saved = gallery_files.save_images([picture for picture in pictures if picture is not None], generation,
                                          services.options, gallery_buttons.save_folder(services),
                                          selected=index if index is not None and index > -1 else None,
                                          make_zip=bool(do_make_zip))
    except gallery_files.SaveError as error:
        return gr.update(), plaintext_to_html(str(error), "error")
    return (gr.update(value=[str(path) for path in saved.downloads], visible=True),
            plaintext_to_html(f"Saved: {saved.archive.name if saved.archive else saved.names[0]}"))


@dataclass
class OutputPanel:
    """A1111's fields: `gallery`, `generation_info` (a hidden textbox holding the generation info JSON),
    `infotext` (HTML), `html_log`."""
    gallery: gr.Gallery
    generation_info: gr.Textbox
    infotext: gr.HTML
    html_log: gr.HTML
    button_upscale: gr.Button | None = None


def create_output_panel(tabname, outdir=None, toprow=None) -> OutputPanel:
    """The project's output panel (gallery, live preview, infotext) for an extension's tab; picking an image shows
    its infotext from `generation_info`, as A1111's panel does. `outdir` and `toprow` are A1111's arguments: 📂
    and "Send to" belong to the generation tabs here."""
    panel = output.create_output_panel(str(tabname))
    generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{tabname}")
    html_log = gr.HTML(elem_id=f"html_log_{tabname}", elem_classes=["html-log"], js_on_load=None)

    def picked(generation_text: str, shown: str, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else -1
        return update_generation_info(generation_text, shown, index)[0]

    panel.gallery.select(picked, inputs=[generation_info, panel.info], outputs=[panel.info], show_progress="hidden",
                         api_visibility=PRIVATE)
    return OutputPanel(panel.gallery, generation_info, panel.info, html_log)
