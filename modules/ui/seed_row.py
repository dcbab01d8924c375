"""The seed row both generation tabs show: Seed with 🎲️/♻️, and behind "Extra" the variation seed and the
seed resizing."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from modules.ui.common import PRIVATE, slider, tool_button
from modules.ui.output import OutputPanel, seed_of_selected


@dataclass
class SeedRow:
    fields: dict[str, gr.components.Component]   # seed, extra, subseed, subseed_strength, seed_resize_from_w/h
    random_seed: gr.Button
    reuse_seed: gr.Button
    random_subseed: gr.Button
    reuse_subseed: gr.Button
    extras: gr.Row

    def connect(self, output: OutputPanel) -> None:
        seed, subseed, extra = self.fields["seed"], self.fields["subseed"], self.fields["extra"]
        self.random_seed.click(None, outputs=[seed], js="() => -1")
        self.random_subseed.click(None, outputs=[subseed], js="() => -1")
        for button, target, key in ((self.reuse_seed, seed, "seeds"), (self.reuse_subseed, subseed, "subseeds")):
            button.click(lambda generation, selected, key=key: _or_skip(seed_of_selected(generation, selected, key)),
                         inputs=[output.generation, output.selected], outputs=[target], queue=False,
                         show_progress="hidden", api_visibility=PRIVATE)
        extra.change(lambda shown: gr.update(visible=bool(shown)), inputs=[extra], outputs=[self.extras],
                     queue=False, show_progress="hidden", api_visibility=PRIVATE)


def create_seed_row(tab: str) -> SeedRow:
    with gr.Row(elem_id=f"{tab}_seed_row", elem_classes=["seed-row"]):
        seed = gr.Number(-1, label="Seed", precision=0, elem_id=f"{tab}_seed", min_width=100, scale=4)
        random_seed = tool_button("🎲️", f"{tab}_random_seed")
        reuse_seed = tool_button("♻️", f"{tab}_reuse_seed")
        extra = gr.Checkbox(False, label="Extra", elem_id=f"{tab}_subseed_show", scale=0, min_width=80)
    with gr.Row(elem_id=f"{tab}_seed_extras", visible=False) as extras:
        subseed = gr.Number(-1, label="Variation seed", precision=0, elem_id=f"{tab}_subseed",
                            min_width=100, scale=2)
        random_subseed = tool_button("🎲️", f"{tab}_random_subseed")
        reuse_subseed = tool_button("♻️", f"{tab}_reuse_subseed")
        subseed_strength = slider(0.0, 1.0, value=0.0, step=0.01, label="Variation strength",
                                  elem_id=f"{tab}_subseed_strength", scale=2, min_width=160)
        resize_w = slider(0, 2048, value=0, step=8, precision=0, label="Resize seed from width",
                          elem_id=f"{tab}_seed_resize_from_w", scale=2, min_width=160)
        resize_h = slider(0, 2048, value=0, step=8, precision=0, label="Resize seed from height",
                          elem_id=f"{tab}_seed_resize_from_h", scale=2, min_width=160)
    fields = {"seed": seed, "extra": extra, "subseed": subseed, "subseed_strength": subseed_strength,
              "seed_resize_from_w": resize_w, "seed_resize_from_h": resize_h}
    return SeedRow(fields, random_seed, reuse_seed, random_subseed, reuse_subseed, extras)


def _or_skip(value):
    return gr.skip() if value is None else value
