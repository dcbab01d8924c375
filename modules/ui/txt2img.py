"""The txt2img tab: A1111's layout and defaults; components → GenerationRequest → job → gallery.

The pieces img2img shares with it (top row, seed row, refiner accordion, the generate/progress loop) are
public here and built the same way in both tabs.
"""
from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import gradio as gr
from pydantic import ValidationError

from modules.output import infotext
from modules.diffusion import samplers
from modules.jobs import Job, QueueFull
from modules.generation.request import validate_request
from modules.script_callbacks import BeforeTokenCounterParams
from modules.ui import controlnet, extra_networks, paste, progress, styles
from modules.ui import scripts as scripts_ui
from modules.ui.common import PRIVATE, escape_multiline, number, slider, token_counter_text, tool_button
from modules.ui.output import (OutputPanel, create_output_panel, error_html, generation_state, infotext_html,
                               seed_of_selected)

log = logging.getLogger(__name__)

TAB = "txt2img"
INT_FIELDS = ("steps", "width", "height", "batch_size", "n_iter", "seed", "subseed", "seed_resize_from_w",
              "seed_resize_from_h", "clip_skip", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y")
FLOAT_FIELDS = ("cfg_scale", "subseed_strength", "denoising_strength", "hr_scale", "refiner_switch_at")
SAME_SAMPLER, SAME_SCHEDULER = "Use same sampler", "Use same scheduler"

# Request field → the label the user sees, to name fields in validation messages.
LABELS = {"prompt": "Prompt", "negative_prompt": "Negative prompt", "sampler_name": "Sampling method",
          "scheduler": "Schedule type", "steps": "Sampling steps", "width": "Width", "height": "Height",
          "n_iter": "Batch count", "batch_size": "Batch size", "cfg_scale": "CFG Scale", "seed": "Seed",
          "subseed": "Variation seed", "subseed_strength": "Variation strength",
          "seed_resize_from_w": "Resize seed from width", "seed_resize_from_h": "Resize seed from height",
          "clip_skip": "Clip skip", "tiling": "Tiling", "styles": "Styles",
          "denoising_strength": "Denoising strength", "hr_scale": "Upscale by", "hr_upscaler": "Upscaler",
          "hr_second_pass_steps": "Hires steps", "hr_resize_x": "Resize width to",
          "hr_resize_y": "Resize height to", "hr_sampler_name": "Hires sampling method",
          "hr_scheduler": "Hires schedule type", "hr_prompt": "Hires prompt",
          "hr_negative_prompt": "Hires negative prompt", "refiner_checkpoint": "Refiner checkpoint",
          "refiner_switch_at": "Switch at"}


def request_data(values: dict[str, Any]) -> dict[str, Any]:
    """Component values → the dict GenerationRequest validates (strict types: ints stay ints)."""
    data = dict(values)
    if not data.pop("extra", False):   # A1111: the variation fields count only while "Extra" is ticked
        data.update(subseed_strength=0.0, seed_resize_from_w=0, seed_resize_from_h=0)
    for key in ("seed_resize_from_w", "seed_resize_from_h"):   # the UI's 0 = off is the API's -1
        if not data.get(key) or data[key] <= 0:
            data[key] = -1
    for key in ("seed", "subseed"):
        if data.get(key) is None:
            data[key] = -1
    for key in ("prompt", "negative_prompt"):
        data[key] = data.get(key) or ""
    for key in ("hr_prompt", "hr_negative_prompt"):
        if key in data:
            data[key] = data[key] or ""
    for key in INT_FIELDS:
        if key in data:
            data[key] = number(data.get(key), int)
    for key in FLOAT_FIELDS:
        if key in data:
            data[key] = number(data.get(key), float)
    data["tiling"] = bool(data.get("tiling"))
    selected = data.get("styles")
    data["styles"] = [selected] if isinstance(selected, str) else list(selected or [])
    if "enable_hr" in data:
        data["enable_hr"] = bool(data["enable_hr"])
    if data.get("hr_sampler_name") in (SAME_SAMPLER, ""):
        data["hr_sampler_name"] = None
    if data.get("hr_scheduler") in (SAME_SCHEDULER, ""):
        data["hr_scheduler"] = None
    refiner_on = bool(data.pop("enable_refiner", False))
    if "refiner_checkpoint" in data and not (refiner_on and data["refiner_checkpoint"]):
        data["refiner_checkpoint"] = None
    units = controlnet.take_units(data)
    if units:
        data["controlnet_units"] = units
    return data


def validation_message(error: ValidationError, labels: dict[str, str] = LABELS) -> str:
    lines = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        location = item.get("loc") or ()
        field = str(location[0]) if location else ""
        label = labels.get(field, field)
        message = item["msg"].removeprefix("Value error, ")
        if field == "controlnet_units" and len(location) > 1:   # "ControlNet Unit 0 › Model: ..."
            label, message = controlnet.error_label(location[1:], message)
        lines.append(f"{label}: {message}" if label else message)
    return "\n".join(lines)


def validated(services, data: dict, labels: dict[str, str] = LABELS):
    """`validate_request`, its error shown as a gr.Error naming each field by its label."""
    try:
        return validate_request(data, services.registry, services.networks, services.upscalers,
                                controlnet=services.controlnet, scripts=services.scripts)
    except ValidationError as error:
        raise gr.Error(escape_multiline(validation_message(error, labels)), title="Invalid settings",
                       print_exception=False) from None


def hires_target_size(width: int, height: int, scale: float, resize_x: int, resize_y: int) -> tuple[int, int]:
    """The size the hires pass renders at, as A1111 computes it (a resize-to of 0 follows the aspect ratio)."""
    if not resize_x and not resize_y:
        return int(width * scale), int(height * scale)
    if not resize_y:
        return resize_x, resize_x * height // width
    if not resize_x:
        return resize_y * width // height, resize_y
    if width / height < resize_x / resize_y:   # both set: fill the box, the excess is cropped
        return resize_x, resize_x * height // width
    return resize_y * width // height, resize_y


def hires_size_html(width, height, scale, resize_x, resize_y) -> str:
    try:
        width, height, resize_x, resize_y = (int(v or 0) for v in (width, height, resize_x, resize_y))
        target = hires_target_size(width, height, float(scale or 1), resize_x, resize_y)
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
    return (f"from <span class='resolution'>{width}x{height}</span> to "
            f"<span class='resolution'>{target[0]}x{target[1]}</span>")


@dataclass
class Submission:
    """One job of a Generate click: `submit` validates and queues it (gr.Error for bad input); `finished`, if
    given, gets the job's result (img2img batch: save it to the chosen folder)."""
    submit: Callable[[], Job]
    finished: Callable[[Any], None] | None = None


@dataclass
class Txt2ImgTab:
    fields: dict[str, gr.components.Component]   # request field (plus "extra", "enable_refiner") → component
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    output: OutputPanel


def _prompt_box(elem_id: str, label: str, placeholder: str, counter_id: str) -> tuple[gr.Textbox, gr.HTML]:
    with gr.Column(elem_classes=["prompt-with-counter"], min_width=0):
        box = gr.Textbox(label=label, show_label=False, lines=3, max_lines=20, placeholder=placeholder,
                         elem_id=elem_id, elem_classes=["prompt"])
        counter = gr.HTML(token_counter_text(""), elem_id=counter_id, elem_classes=["token-counter"],
                          js_on_load=None)
    return box, counter


@dataclass
class Toprow:
    prompt: gr.Textbox
    negative: gr.Textbox
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    paste: gr.Button
    styles: gr.Dropdown


def create_toprow(services, tab: str, demo: gr.Blocks | None, topbar, paste_id: str) -> Toprow:
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
    return Toprow(prompt, negative, generate, interrupt, skip, paste_button, style_dropdown)


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
    accordion, enabled = input_accordion("Refiner", f"{tab}_refiner", f"{tab}_enable_refiner")
    with accordion:
        with gr.Row():
            checkpoint = gr.Dropdown(refiner_choices(services), value=None, label="Checkpoint",
                                     elem_id=f"{tab}_refiner_checkpoint", scale=4, filterable=True)
            refresh = tool_button("🔄", f"{tab}_refiner_checkpoint_refresh")
            switch_at = slider(0.01, 1.0, value=0.8, step=0.01, label="Switch at",
                               elem_id=f"{tab}_refiner_switch_at", scale=4)

    def refresh_list(current):
        services.refresh_checkpoints()
        choices = refiner_choices(services)
        return gr.update(choices=choices, value=current if current in choices else None)

    refresh.click(refresh_list, inputs=[checkpoint], outputs=[checkpoint], show_progress="hidden",
                  api_visibility=PRIVATE)
    return {"enable_refiner": enabled, "refiner_checkpoint": checkpoint, "refiner_switch_at": switch_at}


def create_hires(services, tab: str, width: gr.Slider, height: gr.Slider) -> dict[str, gr.components.Component]:
    """The Hires. fix accordion (txt2img): upscale the first pass and denoise again at the larger size."""
    options = services.options
    choices = services.upscalers.hires_choices()
    accordion, enabled = input_accordion("Hires. fix", f"{tab}_hr", f"{tab}_enable_hr")
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
        size_info = gr.HTML(hires_size_html(512, 512, 2.0, 0, 0), elem_id=f"{tab}_hr_size_info",
                            elem_classes=["hr-size-info"], js_on_load=None)
        with gr.Row(elem_id=f"{tab}_hires_fix_row3", visible=bool(options.hires_fix_show_sampler)):
            hr_sampler = gr.Dropdown([SAME_SAMPLER, *samplers.sampler_names()], value=SAME_SAMPLER,
                                     label="Hires sampling method", elem_id=f"{tab}_hr_sampler")
            hr_scheduler = gr.Dropdown([SAME_SCHEDULER, *samplers.schedule_labels()], value=SAME_SCHEDULER,
                                       label="Hires schedule type", elem_id=f"{tab}_hr_scheduler")
        with gr.Row(elem_id=f"{tab}_hires_fix_row4", visible=bool(options.hires_fix_show_prompts)):
            hr_prompt = gr.Textbox(label="Hires prompt", lines=3, elem_id=f"{tab}_hr_prompt",
                                   placeholder="Prompt for hires fix pass.\nLeave empty to use the same prompt.")
            hr_negative = gr.Textbox(label="Hires negative prompt", lines=3, elem_id=f"{tab}_hr_neg_prompt",
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
            control = controlnet.create_panel(services, TAB, width, height, demo=demo, topbar=topbar)
            script_controls = scripts_ui.create(services.scripts.txt2img)
        output = create_output_panel(TAB)

    fields = {"prompt": top.prompt, "negative_prompt": top.negative, "sampler_name": sampler,
              "scheduler": scheduler, "steps": steps, "width": width, "height": height, "n_iter": n_iter,
              "batch_size": batch_size, "cfg_scale": cfg_scale, **seed_row.fields, "tiling": tiling,
              "clip_skip": clip_skip, "styles": top.styles, **hires, **refiner, **control.fields}
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
        data = request_data(dict(zip(names, values)))
        script_values = list(values[len(names) + len(chooser):])
        data.update(script_controls.request_fields(script_values, values[len(names)] if chooser else None))
        request = validated(services, data)
        return [Submission(lambda: services.submit_txt2img(request))]

    connect_generation(services, top, output, [fields[name] for name in names] + extra, submissions)
    return tab


# ------------------------------------------------------------------ the generate → progress → gallery loop

def connect_generation(services, top: Toprow, output: OutputPanel, inputs: list,
                       submissions: Callable[..., Iterable[Submission]], js: str | None = None) -> None:
    """Generate runs `submissions(*values)` (raising gr.Error for bad input) and then each submission in
    turn, one job after the other, following each with progress and live preview; the gallery
    collects every job's images. Interrupt and Skip act on this browser session's job only."""
    job_id = gr.State(None)
    generate, interrupt, skip = top.generate, top.interrupt, top.skip
    busy_outputs = [generate, interrupt, skip, output.progress, output.preview, output.gallery, job_id]
    outputs = busy_outputs + [output.info, output.generation, output.selected]

    def idle() -> dict:
        return {generate: gr.update(visible=True), interrupt: gr.update(visible=False),
                skip: gr.update(visible=False), output.progress: gr.update(visible=False, value=""),
                output.preview: gr.update(visible=False, value=None), output.gallery: gr.update(visible=True),
                job_id: None}

    async def run(*values):
        pending = iter(submissions(*values))
        collected = []        # (result, seconds) of each finished job
        failure = None
        first = True
        for submission in pending:
            try:
                job = submission.submit()
            except QueueFull as error:
                raise gr.Error(html.escape(str(error)), title="Queue full", print_exception=False) from None
            except gr.Error as error:
                if first:
                    raise
                gr.Warning(getattr(error, "message", str(error)), title="Skipped", duration=15)   # one bad file
                continue
            first = False
            yield {generate: gr.update(visible=False), interrupt: gr.update(visible=True),
                   skip: gr.update(visible=True), job_id: job.id,
                   output.progress: gr.update(visible=True,
                                              value=progress.progress_html(job, services.queue.position(job))),
                   output.preview: gr.update(visible=False, value=None)}
            previewing = False   # the live preview takes the gallery's place while sampling, as in A1111
            async for snapshot in progress.watch(job, services.queue):
                update = {output.progress: snapshot.html}
                if snapshot.preview is not None:
                    update[output.preview] = gr.update(visible=True, value=snapshot.preview)
                    if not previewing:
                        update[output.gallery] = gr.update(visible=False)
                        previewing = True
                yield update
            seconds = (job.finished or time.time()) - (job.started or job.created)   # sampling, not queueing
            result = job.result
            if job.state == "failed":
                failure = f"Error: {job.error}"
                gr.Warning(html.escape(job.error or "generation failed"), title="Error", duration=15)
                break
            if result is None or not result.images:
                failure = ("Cancelled before it started." if job.state == "cancelled"
                           else "Interrupted: no image was finished.")
                break
            if result.warnings:   # add-ons that were not applied (missing, unsupported, for another model)
                gr.Warning(escape_multiline("\n".join(result.warnings)), title="Extra networks", duration=15)
            collected.append((result, seconds))
            if submission.finished is not None:
                submission.finished(result)
            if job.interrupted:
                break
        if not collected:
            yield {**idle(), output.info: error_html(failure or "Nothing to do.")}
            return
        # ControlNet's annotation maps follow the images, as the extension shows them side by side.
        images = [image for result, _ in collected for image in result.images]
        images += [image for result, _ in collected for image in result.detected_maps]
        last, seconds = collected[-1]
        total = sum(seconds for _, seconds in collected)
        generation = generation_state(last, total)
        if len(collected) > 1:   # a batch of files: every image's infotext, in gallery order
            generation.update(infotexts=[text for result, _ in collected for text in result.infotexts],
                              seeds=[seed for result, _ in collected for seed in result.seeds],
                              subseeds=[seed for result, _ in collected for seed in result.subseeds])
        yield {**idle(), output.gallery: gr.update(visible=True, value=images, selected_index=None),
               output.info: infotext_html(last.infotexts[0], total)
               + (error_html(failure) if failure else ""),
               output.generation: generation, output.selected: None}

    event = generate.click(run, inputs=inputs, outputs=outputs, show_progress="hidden", concurrency_limit=None,
                           js=js, api_visibility=PRIVATE)
    event.failure(idle, outputs=busy_outputs, queue=False, show_progress="hidden", api_visibility=PRIVATE)
    interrupt.click(lambda current: _act(services.queue.interrupt, current), inputs=[job_id], queue=False,
                    show_progress="hidden", api_visibility=PRIVATE)
    skip.click(lambda current: _act(services.queue.skip, current), inputs=[job_id], queue=False,
               show_progress="hidden", api_visibility=PRIVATE)


def _or_skip(value):
    return gr.skip() if value is None else value


def _act(method, job: str | None) -> None:
    if job:
        method(job)


# ------------------------------------------------------------------ ↙️ paste

def pasted_values(services, parsed: dict) -> dict[str, Any]:
    """Request fields parsed from infotext → the values the tab's components take (UI-only keys included):
    0 for "off" seed resizing, Extra/Hires/Refiner ticked when their fields are set, titles for checkpoints."""
    values = {name: value for name, value in parsed.items() if value is not None}
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        if name in values and values[name] <= 0:
            values[name] = 0
    if (values.get("subseed_strength") or 0) > 0 or (values.get("seed_resize_from_w") or 0) > 0:
        values["extra"] = True
    if values.get("hr_sampler_name"):
        try:
            values["hr_sampler_name"], values["hr_scheduler"] = samplers.resolve(values["hr_sampler_name"],
                                                                                 values.get("hr_scheduler"))
        except ValueError:
            values.pop("hr_sampler_name"), values.pop("hr_scheduler", None)
    if "refiner_checkpoint" in values:
        # "Refiner: name [hash]" → the dropdown's title; an unknown refiner is left as it was
        info = services.registry.find(str(values["refiner_checkpoint"]).split(" [")[0])
        info = info or services.registry.find(values["refiner_checkpoint"])
        if info is None:
            values.pop("refiner_checkpoint")
        else:
            values["refiner_checkpoint"], values["enable_refiner"] = info.title, True
    return values


def paste_handler(services, fields: dict, script_controls=None):
    """The ↙️ button: the prompt box's infotext (or the last generation's) into the tab's fields and, with
    `script_controls`, into the scripts' controls that declare `infotext_fields`."""
    def handler(prompt_text: str):
        try:
            text = paste.infotext_source(prompt_text, services.paths.params_file)
        except paste.NothingToPaste as error:
            gr.Warning(html.escape(str(error)), title="Paste")
            return {}
        warnings: list[str] = []
        try:
            parsed = paste.request_fields(text, warnings)
        except Exception as error:  # noqa: BLE001 - odd text in the prompt box must not break the page
            log.warning("could not parse infotext: %s", error)
            gr.Warning(html.escape(f"Could not read generation parameters: {error}"), title="Paste")
            return {}
        services.scripts.callbacks.infotext_pasted(text, parsed)   # extensions may read or change the fields
        updates = {}
        for name, value in pasted_values(services, parsed).items():
            if name in fields:   # as the component takes it (a radio's label, a slider's range)
                shown = paste.component_value(name, fields[name], value, warnings)
                if shown is not None:
                    updates[fields[name]] = shown
        updates.update(controlnet.paste_updates(services, parsed.get("controlnet_units"), fields, warnings,
                                                untick_others=False))
        if script_controls is not None:
            updates.update(script_controls.paste_updates(infotext.parse_infotext(text)))
        if warnings:
            gr.Warning(escape_multiline("Not pasted: " + "\n".join(warnings)), title="Paste")
        return updates
    return handler
