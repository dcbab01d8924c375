"""Poor man's outpainting (A1111's scripts/poor_mans_outpainting.py): the canvas extended by repeating its edges,
the new border inpainted."""
from __future__ import annotations

from modules import scripts
from modules.addons import arguments
from modules.addons.outpainting import DIRECTIONS, outpaint

TITLE = "Poor man's outpainting"
FILL_MODES = ["fill", "original", "latent noise", "latent nothing"]


class Script(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        import gradio as gr

        from modules.ui.common import slider

        pixels = slider(8, 256, value=128, step=8, precision=0, label="Pixels to expand",
                        elem_id=self.elem_id("pixels"))
        mask_blur = slider(0, 64, value=4, step=1, precision=0, label="Mask blur", elem_id=self.elem_id("mask_blur"))
        inpainting_fill = gr.Radio(FILL_MODES, value=FILL_MODES[1], type="index", label="Masked content",
                                   elem_id=self.elem_id("inpainting_fill"))
        direction = gr.CheckboxGroup(list(DIRECTIONS), value=list(DIRECTIONS), label="Outpainting direction",
                                     elem_id=self.elem_id("direction"))
        return [pixels, mask_blur, inpainting_fill, direction]

    def run(self, p, pixels, mask_blur, inpainting_fill, direction):
        fill = arguments.number(TITLE, "inpainting_fill", inpainting_fill, int, 0, 3)
        return outpaint(TITLE, p, pixels, mask_blur, direction, fill_mode="edge", inpainting_fill=fill)
