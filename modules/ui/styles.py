"""A1111's prompt styles next to the prompt: the Styles multiselect, 📋 apply styles, and the 🖌️ style editor.

The selected styles go into the request (`styles`), and the backend applies them when it generates; 📋 merges
them into the prompt boxes instead and clears the selection. Styles live in `styles.csv` (StyleDatabase).
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass

import gradio as gr

from modules.prompts.styles import PromptStyle
from modules.ui.common import PRIVATE, tool_button

log = logging.getLogger(__name__)


@dataclass
class StylesRow:
    dropdown: gr.Dropdown       # the selected styles, a request field
    apply: gr.Button            # 📋
    edit: gr.Button             # 🖌️


def style_choices(services) -> list[str]:
    return services.networks.styles.names()


def selection_update(services, selected: list[str] | None = None) -> dict:
    """The Styles dropdown with the current names; selected names that no longer exist are dropped."""
    names = style_choices(services)
    kept = [name for name in (selected or []) if name in names]
    return gr.update(choices=names, value=kept)


def create_buttons(tab: str) -> tuple[gr.Button, gr.Button]:
    """📋 and 🖌️, for the tools row under the Generate button."""
    apply = tool_button("📋", f"{tab}_style_apply")
    edit = tool_button("🖌️", f"{tab}_style_create")
    return apply, edit


def create_dropdown(services, tab: str) -> gr.Dropdown:
    return gr.Dropdown(choices=style_choices(services), value=[], multiselect=True, label="Styles",
                       elem_id=f"{tab}_styles", filterable=True, min_width=0)


def create_editor(services, tab: str, row: StylesRow, prompt: gr.Textbox,
                  negative: gr.Textbox) -> None:
    """The 🖌️ panel (A1111's style editor): pick or name a style, edit its texts, save or delete it."""
    with gr.Column(visible=False, elem_id=f"{tab}_styles_edit", elem_classes=["popup-dialog"]) as panel:
        gr.HTML("<h3>Styles</h3>", js_on_load=None, elem_classes=["popup-title"])
        with gr.Row(equal_height=False):
            name = gr.Dropdown(choices=style_choices(services), value=None, label="Style",
                               elem_id=f"{tab}_edit_style_name", allow_custom_value=True, filterable=True,
                               info="Pick a style to edit, or type a new name", scale=4)
            copy = tool_button("⤵️", f"{tab}_style_copy_from_prompt")
        style_prompt = gr.Textbox(label="Prompt", lines=3, elem_id=f"{tab}_edit_style_prompt",
                                  info="{prompt} marks where the prompt goes; otherwise the style is appended")
        style_negative = gr.Textbox(label="Negative prompt", lines=3, elem_id=f"{tab}_edit_style_neg_prompt")
        with gr.Row():
            delete = gr.Button("Delete", variant="stop", elem_id=f"{tab}_edit_style_delete")
            save = gr.Button("Save", variant="primary", elem_id=f"{tab}_edit_style_save")
            close = gr.Button("Close", elem_id=f"{tab}_edit_style_close")

    styles = services.networks.styles

    def open_editor(selected: list[str] | None):
        current = (selected or [None])[0]
        style = styles.get(current) if current else None
        return (gr.update(visible=True), gr.update(choices=style_choices(services), value=current),
                style.prompt if style else "", style.negative_prompt if style else "")

    def pick(style_name: str | None):
        style = styles.get(style_name) if style_name else None
        if style is None:
            return gr.skip(), gr.skip()
        return style.prompt, style.negative_prompt

    def save_style(style_name: str | None, text: str, negative_text: str, selected: list[str] | None):
        style_name = (style_name or "").strip()
        try:
            styles.save(PromptStyle(style_name, text or "", negative_text or ""))
        except (ValueError, OSError) as error:
            gr.Warning(html.escape(str(error)), title="Styles")
            return gr.skip(), gr.skip()
        gr.Info(html.escape(f"Style {style_name!r} saved."), title="Styles")
        return (gr.update(choices=style_choices(services), value=style_name),
                selection_update(services, selected))

    def delete_style(style_name: str | None, selected: list[str] | None):
        try:
            deleted = styles.delete(style_name) if style_name else False
        except OSError as error:
            gr.Warning(html.escape(str(error)), title="Styles")
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if not deleted:
            gr.Warning(html.escape(f"There is no style named {style_name!r}."), title="Styles")
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return (gr.update(choices=style_choices(services), value=None), "", "",
                selection_update(services, selected))

    quiet = {"show_progress": "hidden", "api_visibility": PRIVATE}
    row.edit.click(open_editor, inputs=[row.dropdown], outputs=[panel, name, style_prompt, style_negative],
                   queue=False, **quiet)
    name.input(pick, inputs=[name], outputs=[style_prompt, style_negative], queue=False, **quiet)
    copy.click(None, inputs=[prompt, negative], outputs=[style_prompt, style_negative], js="(p, n) => [p, n]")
    save.click(save_style, inputs=[name, style_prompt, style_negative, row.dropdown], outputs=[name, row.dropdown],
               **quiet)
    delete.click(delete_style, inputs=[name, row.dropdown],
                 outputs=[name, style_prompt, style_negative, row.dropdown], **quiet)
    close.click(lambda: gr.update(visible=False), outputs=[panel], queue=False, **quiet)


def connect(services, tab: str, demo: gr.Blocks | None, row: StylesRow, prompt: gr.Textbox,
            negative: gr.Textbox) -> None:
    """📋 merges the selected styles into the prompt boxes and clears the selection (A1111)."""

    def apply(prompt_text: str, negative_text: str, selected: list[str] | None):
        if not selected:
            return gr.skip(), gr.skip(), gr.skip()
        new_prompt, new_negative = services.networks.styles.apply(prompt_text or "", negative_text or "",
                                                                  list(selected))
        return new_prompt, new_negative, gr.update(value=[])

    row.apply.click(apply, inputs=[prompt, negative, row.dropdown], outputs=[prompt, negative, row.dropdown],
                    queue=False, show_progress="hidden", api_visibility=PRIVATE)
    if demo is not None:   # styles.csv may have changed since the page was built
        demo.load(lambda selected: selection_update(services, selected), inputs=[row.dropdown],
                  outputs=[row.dropdown], show_progress="hidden", api_visibility=PRIVATE)
    create_editor(services, tab, row, prompt, negative)
