"""The Hires. fix and Refiner accordions (A1111's InputAccordion: ticked in the header, opened below)."""
from __future__ import annotations

import gradio as gr

from modules.diffusion import samplers
from modules.generation.hires import HiresPlan
from modules.ui.common import PRIVATE, slider, tool_button

SAME_SAMPLER, SAME_SCHEDULER = "Use same sampler", "Use same scheduler"


def input_accordion(label: str, elem_id: str, checkbox_id: str) -> tuple[gr.Accordion, gr.Checkbox]:
    """A1111's InputAccordion: an accordion whose header holds the checkbox that enables it. The checkbox is a
    hidden gr.Checkbox that script.js mirrors into the header (opening the accordion ticks it, as in A1111)."""
    checkbox = gr.Checkbox(False, label=label, elem_id=checkbox_id, visible="hidden",
                           elem_classes=["input-accordion-checkbox", f"for-{elem_id}"])
    accordion = gr.Accordion(label, open=False, elem_id=elem_id, elem_classes=["input-accordion"])
    checkbox.change(None, inputs=[checkbox], js=f"(checked) => inputAccordionChecked({elem_id!r}, checked)")
    return accordion, checkbox


def refiner_choices(services) -> list[str]:
    return [info.title for info in services.registry.items()]


def create_refiner(services, tab: str) -> dict[str, gr.components.Component]:
    """The Refiner accordion: another checkpoint takes over at "Switch at" of the steps."""
    # A1111's ids: its refiner is a built-in script whose elem_id("enable") is "<tab>_enable"
    accordion, enabled = input_accordion("Refiner", f"{tab}_enable", f"{tab}_enable-checkbox")
    with accordion:
        with gr.Row():
            checkpoint = gr.Dropdown(refiner_choices(services), value=None, label="Checkpoint",
                                     elem_id=f"{tab}_checkpoint", scale=4, filterable=True)
            refresh = tool_button("🔄", f"{tab}_refiner_checkpoint_refresh")
            switch_at = slider(0.01, 1.0, value=0.8, step=0.01, label="Switch at",
                               elem_id=f"{tab}_switch_at", scale=4)

    def refresh_list(current):
        services.refresh_checkpoints()
        choices = refiner_choices(services)
        return gr.update(choices=choices, value=current if current in choices else None)

    refresh.click(refresh_list, inputs=[checkpoint], outputs=[checkpoint], show_progress="hidden",
                  api_visibility=PRIVATE)
    return {"enable_refiner": enabled, "refiner_checkpoint": checkpoint, "refiner_switch_at": switch_at}


def hires_size_html(width, height, scale, resize_x, resize_y) -> str:
    """"from 512x512 to 1024x1024": the final size the hires pass renders, as the backend computes it."""
    try:
        width, height, resize_x, resize_y = (int(v or 0) for v in (width, height, resize_x, resize_y))
        target = HiresPlan.of_size(width, height, float(scale or 1), resize_x, resize_y).target
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
    return (f"from <span class='resolution'>{width}x{height}</span> to "
            f"<span class='resolution'>{target[0]}x{target[1]}</span>")


def create_hires(services, tab: str, width: gr.Slider, height: gr.Slider) -> dict[str, gr.components.Component]:
    """The Hires. fix accordion (txt2img): upscale the first pass and denoise again at the larger size. Some of its
    elem_ids are A1111's without the tab (hr_sampler, hires_prompt, ...): it is txt2img's only."""
    options = services.options
    choices = services.upscalers.hires_choices()
    accordion, enabled = input_accordion("Hires. fix", f"{tab}_hr", f"{tab}_hr-checkbox")
    with accordion:
        with gr.Row(elem_id=f"{tab}_hires_fix_row1"):
            upscaler = gr.Dropdown(choices, value="Latent" if "Latent" in choices else choices[0], label="Upscaler",
                                   elem_id=f"{tab}_hr_upscaler", filterable=True)
            hr_steps = slider(0, 150, value=0, step=1, precision=0, label="Hires steps", elem_id=f"{tab}_hires_steps")
            denoising = slider(0.0, 1.0, value=0.7, step=0.01, label="Denoising strength",
                               elem_id=f"{tab}_denoising_strength")
        with gr.Row(elem_id=f"{tab}_hires_fix_row2"):
            scale = slider(1.0, 4.0, value=2.0, step=0.05, label="Upscale by", elem_id=f"{tab}_hr_scale")
            resize_x = slider(0, 2048, value=0, step=8, precision=0, label="Resize width to",
                              elem_id=f"{tab}_hr_resize_x")
            resize_y = slider(0, 2048, value=0, step=8, precision=0, label="Resize height to",
                              elem_id=f"{tab}_hr_resize_y")
        size_info = gr.HTML(hires_size_html(512, 512, 2.0, 0, 0), elem_id="txtimg_hr_finalres",
                            elem_classes=["hr-size-info"], js_on_load=None)
        with gr.Row(elem_id=f"{tab}_hires_fix_row3", visible=bool(options.hires_fix_show_sampler)):
            hr_sampler = gr.Dropdown([SAME_SAMPLER, *samplers.sampler_names()], value=SAME_SAMPLER,
                                     label="Hires sampling method", elem_id="hr_sampler")
            hr_scheduler = gr.Dropdown([SAME_SCHEDULER, *samplers.schedule_labels()], value=SAME_SCHEDULER,
                                       label="Hires schedule type", elem_id="hr_scheduler")
        with gr.Row(elem_id=f"{tab}_hires_fix_row4", visible=bool(options.hires_fix_show_prompts)):
            hr_prompt = gr.Textbox(label="Hires prompt", lines=3, elem_id="hires_prompt",
                                   placeholder="Prompt for hires fix pass.\nLeave empty to use the same prompt.")
            hr_negative = gr.Textbox(label="Hires negative prompt", lines=3, elem_id="hires_neg_prompt",
                                     placeholder="Negative prompt for hires fix pass.\n"
                                                 "Leave empty to use the same negative prompt.")
    sizes = [width, height, scale, resize_x, resize_y]
    for component in sizes:
        component.change(hires_size_html, inputs=sizes, outputs=[size_info], queue=False, show_progress="hidden",
                         api_visibility=PRIVATE)
    return {"enable_hr": enabled, "hr_upscaler": upscaler, "hr_second_pass_steps": hr_steps,
            "denoising_strength": denoising, "hr_scale": scale, "hr_resize_x": resize_x, "hr_resize_y": resize_y,
            "hr_sampler_name": hr_sampler, "hr_scheduler": hr_scheduler, "hr_prompt": hr_prompt,
            "hr_negative_prompt": hr_negative}
