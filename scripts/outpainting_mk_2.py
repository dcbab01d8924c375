"""Outpainting mk2 (A1111's scripts/outpainting_mk_2.py): the canvas extended with noise shaped like the picture's
colours, the new border inpainted."""
from __future__ import annotations

from modules import scripts
from modules.addons import arguments
from modules.addons.outpainting import DIRECTIONS, outpaint

TITLE = "Outpainting mk2"


class Script(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        import gradio as gr

        from modules.ui.common import slider

        info = gr.HTML("<p>Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, Denoising strength: "
                       "0.8</p>", js_on_load=None)
        pixels = slider(8, 256, value=128, step=8, precision=0, label="Pixels to expand",
                        elem_id=self.elem_id("pixels"))
        mask_blur = slider(0, 64, value=8, step=1, precision=0, label="Mask blur", elem_id=self.elem_id("mask_blur"))
        noise_q = slider(0.0, 4.0, value=1.0, step=0.01, label="Fall-off exponent (lower=higher detail)",
                         elem_id=self.elem_id("noise_q"))
        color_variation = slider(0.0, 1.0, value=0.05, step=0.01, label="Color variation",
                                 elem_id=self.elem_id("color_variation"))
        direction = gr.CheckboxGroup(list(DIRECTIONS), value=list(DIRECTIONS), label="Outpainting direction",
                                     elem_id=self.elem_id("direction"))
        return [info, pixels, mask_blur, direction, noise_q, color_variation]

    def run(self, p, _, pixels, mask_blur, direction, noise_q=1.0, color_variation=0.05):
        # The canvas noise does not follow the fall-off and colour variation yet; they are checked all the same.
        arguments.number(TITLE, "noise_q", noise_q, float, 0.0, 4.0)
        arguments.number(TITLE, "color_variation", color_variation, float, 0.0, 1.0)
        return outpaint(TITLE, p, pixels, mask_blur, direction, fill_mode="noise")
