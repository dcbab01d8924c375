"""Loopback (A1111's scripts/loopback.py): each loop's output is the next loop's input, the denoising strength
moving from the request's to the final one along a curve."""
from __future__ import annotations

import copy
import math

from modules import processing, scripts
from modules.addons import arguments
from modules.jobs import Interrupted, JobError

TITLE = "Loopback"
CURVES = ("Aggressive", "Linear", "Lazy")


class Script(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        import gradio as gr

        from modules.ui.common import slider

        loops = slider(1, 32, value=4, step=1, precision=0, label="Loops", elem_id=self.elem_id("loops"))
        final_denoising_strength = slider(0.0, 1.0, value=0.5, step=0.01, label="Final denoising strength",
                                          elem_id=self.elem_id("final_denoising_strength"))
        denoising_curve = gr.Dropdown(list(CURVES), value="Linear", label="Denoising strength curve",
                                      elem_id=self.elem_id("denoising_curve"))
        append_interrogation = gr.Dropdown(["None"], value="None", label="Append interrogated prompt at each iteration",
                                           elem_id=self.elem_id("append_interrogation"))
        return [loops, final_denoising_strength, denoising_curve, append_interrogation]

    def run(self, p, loops, final_denoising_strength, denoising_curve, append_interrogation="None"):
        loops = arguments.number(TITLE, "loops", loops, int, 1, 32)
        final = arguments.number(TITLE, "final_denoising_strength", final_denoising_strength, float, 0.0, 1.0)
        arguments.choice(TITLE, "denoising_curve", denoising_curve, CURVES)
        if append_interrogation not in (None, False, "", "None"):
            raise JobError(f"{TITLE}: appending an interrogated prompt is not available")
        processing.fix_seed(p)
        start = p.denoising_strength

        def strength(loop: int) -> float:
            if loops == 1:
                return start
            progress = loop / (loops - 1)
            shape = {"Aggressive": math.sin(progress * math.pi / 2), "Lazy": 1 - math.cos(progress * math.pi / 2),
                     "Linear": progress}[denoising_curve]
            return start + (final - start) * shape

        job = p._job
        job.image_count = p.n_iter * loops   # the progress bar covers every loop
        parts = []
        for batch in range(p.n_iter):
            current = list(p.init_images)
            for loop in range(loops):
                if job.interrupted:
                    break
                job.textinfo = f"Loop {loop + 1} of {loops}"
                cell = copy.copy(p)
                cell.init_images, cell.n_iter, cell.denoising_strength = current, 1, strength(loop)
                cell.do_not_save_grid = True
                cell.seed = p.seed + batch * loops * p.batch_size + loop * p.batch_size
                processed = processing.process_images(cell)
                parts.append(processed)
                current = processed.images[processed.index_of_first_image:]
        if not parts:
            raise Interrupted("interrupted before the first loop")
        return processing.joined(p, parts)
