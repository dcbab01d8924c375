"""Prompt suffix: the worked example of docs/extensions.md.

An always-on script (an accordion under the generation settings) that appends text to every prompt and
records it in the infotext, plus a setting and an image-saved callback that writes the infotext next to
each image. It touches only the documented API: modules.scripts, modules.script_callbacks, modules.shared.
"""
from pathlib import Path

import gradio as gr

from modules import script_callbacks, scripts, shared


class PromptSuffix(scripts.Script):
    def title(self):
        return "Prompt suffix"

    def show(self, is_img2img):
        return scripts.AlwaysVisible   # in both tabs, always on (its own checkbox decides)

    def ui(self, is_img2img):
        with gr.Accordion("Prompt suffix", open=False, elem_id=self.elem_id("accordion")):
            enabled = gr.Checkbox(False, label="Append to every prompt", elem_id=self.elem_id("enabled"))
            suffix = gr.Textbox("", label="Suffix", placeholder="highly detailed, sharp focus",
                                elem_id=self.elem_id("suffix"))
        # pasting an infotext that has "Prompt suffix: ..." ticks the box and fills the text
        self.infotext_fields = [(enabled, lambda infotext: "Prompt suffix" in infotext), (suffix, "Prompt suffix")]
        return [enabled, suffix]   # arrive as *args below, in this order (API: alwayson_scripts args)

    def process(self, p, enabled, suffix):
        suffix = (suffix or "").strip()
        if not enabled or not suffix:
            return
        p.prompt = f"{p.prompt}, {suffix}" if p.prompt else suffix
        p.extra_generation_params["Prompt suffix"] = suffix


def add_settings():
    section = ("prompt_suffix", "Prompt suffix")
    shared.opts.add_option("prompt_suffix_save_txt", shared.OptionInfo(
        False, "Also write each image's infotext to a .txt file next to it", section=section))


def write_txt(params: script_callbacks.ImageSaveParams):
    if shared.opts.get("prompt_suffix_save_txt", False) and params.pnginfo.get("parameters"):
        Path(params.filename).with_suffix(".txt").write_text(params.pnginfo["parameters"], encoding="utf-8")


script_callbacks.on_ui_settings(add_settings)
script_callbacks.on_image_saved(write_txt)
