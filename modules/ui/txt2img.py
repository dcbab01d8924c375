"""The txt2img tab: A1111's layout and defaults; components → GenerationRequest → job → gallery. The building
blocks it shares with img2img are in toprow, seed_row, accordions, request_form, paste_button and generate."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from modules.diffusion import samplers
from modules.ui import controlnet, override_settings, request_form
from modules.ui import scripts as scripts_ui
from modules.ui.accordions import create_hires, create_refiner
from modules.ui.common import PRIVATE, slider, tool_button
from modules.ui.generate import Submission, connect_generation
from modules.ui.output import OutputPanel, create_output_panel
from modules.ui.paste_button import paste_handler
from modules.ui.seed_row import create_seed_row
from modules.ui.toprow import create_toprow

TAB = "txt2img"


@dataclass
class Txt2ImgTab:
    fields: dict[str, gr.components.Component]   # request field (plus "extra", "enable_refiner") → component
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    output: OutputPanel


def create_tab(services, demo: gr.Blocks | None = None, topbar=None) -> Txt2ImgTab:
    """The tab; `demo` (to refresh the styles on page load) and `topbar` (for checkpoint cards) are optional."""
    default_clip_skip = int(services.options.CLIP_stop_at_last_layers)
    top = create_toprow(services, TAB, demo, topbar, "paste")

    with gr.Row(elem_id=f"{TAB}_extra_networks_and_results", equal_height=False):
        with gr.Column(elem_id=f"{TAB}_settings", scale=1, min_width=360):
            with gr.Row(elem_id=f"sampler_selection_{TAB}"):
                sampler = gr.Dropdown(samplers.sampler_names(), value=samplers.sampler_names()[0],
                                      label="Sampling method", elem_id=f"{TAB}_sampling", filterable=True)
                scheduler = gr.Dropdown(samplers.schedule_labels(), value=samplers.AUTOMATIC,
                                        label="Schedule type", elem_id=f"{TAB}_scheduler")
            steps = slider(1, 150, value=20, step=1, precision=0, label="Sampling steps",
                           elem_id=f"{TAB}_steps")
            with gr.Row(equal_height=False):
                with gr.Column(elem_id=f"{TAB}_column_size", scale=4, min_width=160):
                    width = slider(64, 2048, value=512, step=8, precision=0, label="Width",
                                   elem_id=f"{TAB}_width")
                    height = slider(64, 2048, value=512, step=8, precision=0, label="Height",
                                    elem_id=f"{TAB}_height")
                with gr.Column(elem_id=f"{TAB}_dimensions_row", scale=0, min_width=0,
                               elem_classes=["dimensions-tools"]):
                    swap = tool_button("⇅", f"{TAB}_res_switch_btn")
                with gr.Column(elem_id=f"{TAB}_column_batch", scale=2, min_width=120):
                    n_iter = slider(1, 100, value=1, step=1, precision=0, label="Batch count",
                                    elem_id=f"{TAB}_batch_count")
                    batch_size = slider(1, 8, value=1, step=1, precision=0, label="Batch size",
                                        elem_id=f"{TAB}_batch_size")
            cfg_scale = slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id=f"{TAB}_cfg_scale")
            seed_row = create_seed_row(TAB)
            with gr.Row(elem_id=f"{TAB}_other_settings"):
                tiling = gr.Checkbox(False, label="Tiling", elem_id=f"{TAB}_tiling", scale=0, min_width=100)
                clip_skip = slider(1, 12, value=default_clip_skip, step=1, precision=0, label="Clip skip",
                                   elem_id=f"{TAB}_clip_skip", scale=3)
            hires = create_hires(services, TAB, width, height)
            refiner = create_refiner(services, TAB)
            overrides = override_settings.create(TAB)
            control = controlnet.create_panel(services, TAB, width, height, demo=demo, topbar=topbar)
            script_controls = scripts_ui.create(services.scripts.txt2img)
        output = create_output_panel(TAB, services)

    fields = {"prompt": top.prompt, "negative_prompt": top.negative, "sampler_name": sampler,
              "scheduler": scheduler, "steps": steps, "width": width, "height": height, "n_iter": n_iter,
              "batch_size": batch_size, "cfg_scale": cfg_scale, **seed_row.fields, "tiling": tiling,
              "clip_skip": clip_skip, "styles": top.styles, **hires, **refiner, **control.fields,
              "override_settings": overrides}
    tab = Txt2ImgTab(fields, top.generate, top.interrupt, top.skip, output)

    swap.click(None, inputs=[width, height], outputs=[width, height], js="(w, h) => [h, w]")
    seed_row.connect(output)
    top.paste.click(paste_handler(services, fields, script_controls), inputs=[top.prompt],
                    outputs=list(dict.fromkeys([*fields.values(), *script_controls.paste_targets()])),
                    show_progress="hidden",
                    api_visibility=PRIVATE)

    names = list(fields)
    chooser = [script_controls.chooser] if script_controls.chooser is not None else []
    extra = chooser + script_controls.components

    def submissions(*values) -> list[Submission]:
        data = request_form.request_data(dict(zip(names, values)))
        script_values = list(values[len(names) + len(chooser):])
        data.update(script_controls.request_fields(script_values, values[len(names)] if chooser else None))
        request = request_form.validated(services, data)
        return [Submission(lambda: services.submit_txt2img(request))]

    connect_generation(services, top, output, [fields[name] for name in names] + extra, submissions)
    return tab
