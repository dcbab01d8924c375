"""The top row both generation tabs open with: prompts with token counters, Generate/Interrupt/Skip, the ↙️
paste button and the styles, then the Extra Networks panel."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from modules.script_callbacks import BeforeTokenCounterParams
from modules.ui import extra_networks, styles
from modules.ui.common import PRIVATE, token_counter_text, tool_button


@dataclass
class Toprow:
    prompt: gr.Textbox
    negative: gr.Textbox
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    paste: gr.Button
    styles: gr.Dropdown
    interrogate: dict[str, gr.Button] | None = None   # img2img's 📎 CLIP and 📦 DeepBooru, by model name


def _prompt_box(elem_id: str, label: str, placeholder: str, counter_id: str) -> tuple[gr.Textbox, gr.HTML]:
    with gr.Column(elem_id=f"{elem_id}_row", elem_classes=["prompt-with-counter"], min_width=0):   # A1111's row id
        box = gr.Textbox(label=label, show_label=False, lines=3, max_lines=20, placeholder=placeholder,
                         elem_id=elem_id, elem_classes=["prompt"])
        counter = gr.HTML(token_counter_text(""), elem_id=counter_id, elem_classes=["token-counter"],
                          js_on_load=None)
    return box, counter


def create_toprow(services, tab: str, demo: gr.Blocks | None, topbar, paste_id: str,
                  interrogate: bool = False) -> Toprow:
    """Prompts with token counters, Generate/Interrupt/Skip, paste and styles, then the Extra Networks panel."""
    hint = "(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)"
    with gr.Row(elem_id=f"{tab}_toprow", elem_classes=["toprow"], equal_height=False):
        with gr.Column(scale=6, elem_id=f"{tab}_prompt_container", min_width=300):
            prompt, prompt_counter = _prompt_box(f"{tab}_prompt", "Prompt", f"Prompt\n{hint}",
                                                 f"{tab}_token_counter")
            negative, negative_counter = _prompt_box(f"{tab}_neg_prompt", "Negative prompt",
                                                     f"Negative prompt\n{hint}", f"{tab}_negative_token_counter")
        with gr.Column(scale=1, elem_id=f"{tab}_actions_column", min_width=200):
            with gr.Row(elem_id=f"{tab}_generate_box", elem_classes=["generate-box"]):
                interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", visible=False, min_width=0)
                skip = gr.Button("Skip", elem_id=f"{tab}_skip", visible=False, min_width=0)
                generate = gr.Button("Generate", elem_id=f"{tab}_generate", variant="primary", min_width=0)
            with gr.Row(elem_id=f"{tab}_tools", elem_classes=["tools"]):
                paste_button = tool_button("↙️", paste_id)
                interrogators = {"clip": tool_button("📎", "interrogate"),
                                 "deepdanbooru": tool_button("📦", "deepbooru")} if interrogate else None
                apply_styles, edit_styles = styles.create_buttons(tab)
            with gr.Row(elem_id=f"{tab}_styles_row", elem_classes=["styles-row"]):
                style_dropdown = styles.create_dropdown(services, tab)

    extra_networks.create_panel(services, tab, prompt, negative, topbar)

    callbacks = services.scripts.callbacks
    for box, counter, positive in ((prompt, prompt_counter, True), (negative, negative_counter, False)):
        def count(text, positive=positive):
            # Extensions (wildcards, dynamic prompts) may say what the prompt really becomes before it is counted.
            params = BeforeTokenCounterParams(text or "", 0, [], positive)
            callbacks.fire("before_token_counter", params)
            return token_counter_text(params.prompt)
        box.change(count if callbacks.has("before_token_counter") else token_counter_text, inputs=[box],
                   outputs=[counter], queue=False, show_progress="hidden", trigger_mode="always_last",
                   api_visibility=PRIVATE)
    styles.connect(services, tab, demo, styles.StylesRow(style_dropdown, apply_styles, edit_styles), prompt,
                   negative)
    return Toprow(prompt, negative, generate, interrupt, skip, paste_button, style_dropdown, interrogators)
