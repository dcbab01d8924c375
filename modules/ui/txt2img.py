"""The txt2img tab: A1111's layout and defaults; components → GenerationRequest → job → gallery."""
from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass
from typing import Any

import gradio as gr
from pydantic import ValidationError

from modules import samplers
from modules.jobs import QueueFull
from modules.processing import validate_request
from modules.ui import extra_networks, paste, progress, styles
from modules.ui.common import PRIVATE, escape_multiline, number, token_counter_text, tool_button
from modules.ui.output import (OutputPanel, create_output_panel, error_html, generation_state, infotext_html,
                               seed_of_selected)

log = logging.getLogger(__name__)

TAB = "txt2img"
INT_FIELDS = ("steps", "width", "height", "batch_size", "n_iter", "seed", "subseed", "seed_resize_from_w",
              "seed_resize_from_h", "clip_skip")
FLOAT_FIELDS = ("cfg_scale", "subseed_strength")

# Request field → the label the user sees, to name fields in validation messages.
LABELS = {"prompt": "Prompt", "negative_prompt": "Negative prompt", "sampler_name": "Sampling method",
          "scheduler": "Schedule type", "steps": "Sampling steps", "width": "Width", "height": "Height",
          "n_iter": "Batch count", "batch_size": "Batch size", "cfg_scale": "CFG Scale", "seed": "Seed",
          "subseed": "Variation seed", "subseed_strength": "Variation strength",
          "seed_resize_from_w": "Resize seed from width", "seed_resize_from_h": "Resize seed from height",
          "clip_skip": "Clip skip", "tiling": "Tiling", "styles": "Styles"}


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
    for key in INT_FIELDS:
        data[key] = number(data.get(key), int)
    for key in FLOAT_FIELDS:
        data[key] = number(data.get(key), float)
    data["tiling"] = bool(data.get("tiling"))
    selected = data.get("styles")
    data["styles"] = [selected] if isinstance(selected, str) else list(selected or [])
    return data


def validation_message(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        field = str(item["loc"][0]) if item.get("loc") else ""
        label = LABELS.get(field, field)
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{label}: {message}" if label else message)
    return "\n".join(lines)


@dataclass
class Txt2ImgTab:
    fields: dict[str, gr.components.Component]   # request field (plus "extra") → component
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    output: OutputPanel


def slider(*args, **kwargs) -> gr.Slider:
    return gr.Slider(*args, buttons=[], **kwargs)


def _prompt_box(elem_id: str, label: str, placeholder: str, counter_id: str) -> tuple[gr.Textbox, gr.HTML]:
    with gr.Column(elem_classes=["prompt-with-counter"], min_width=0):
        box = gr.Textbox(label=label, show_label=False, lines=3, max_lines=20, placeholder=placeholder,
                         elem_id=elem_id, elem_classes=["prompt"])
        counter = gr.HTML(token_counter_text(""), elem_id=counter_id, elem_classes=["token-counter"],
                          js_on_load=None)
    return box, counter


def create_tab(services, demo: gr.Blocks | None = None, topbar=None) -> Txt2ImgTab:
    """The tab; `demo` (to refresh the styles on page load) and `topbar` (for checkpoint cards) are optional."""
    default_clip_skip = int(services.options.CLIP_stop_at_last_layers)
    with gr.Row(elem_id=f"{TAB}_toprow", elem_classes=["toprow"], equal_height=False):
        with gr.Column(scale=6, elem_id=f"{TAB}_prompt_container", min_width=300):
            prompt, prompt_counter = _prompt_box(
                f"{TAB}_prompt", "Prompt",
                "Prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)",
                f"{TAB}_token_counter")
            negative, negative_counter = _prompt_box(
                f"{TAB}_neg_prompt", "Negative prompt",
                "Negative prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)",
                f"{TAB}_negative_token_counter")
        with gr.Column(scale=1, elem_id=f"{TAB}_actions_column", min_width=200):
            with gr.Row(elem_id=f"{TAB}_generate_box", elem_classes=["generate-box"]):
                interrupt = gr.Button("Interrupt", elem_id=f"{TAB}_interrupt", visible=False, min_width=0)
                skip = gr.Button("Skip", elem_id=f"{TAB}_skip", visible=False, min_width=0)
                generate = gr.Button("Generate", elem_id=f"{TAB}_generate", variant="primary", min_width=0)
            with gr.Row(elem_id=f"{TAB}_tools", elem_classes=["tools"]):
                paste_button = tool_button("↙️", "paste")
                apply_styles, edit_styles = styles.create_buttons(TAB)
            with gr.Row(elem_id=f"{TAB}_styles_row", elem_classes=["styles-row"]):
                style_dropdown = styles.create_dropdown(services, TAB)

    extra_networks.create_panel(services, TAB, prompt, negative, topbar)

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
            with gr.Row(elem_id=f"{TAB}_seed_row", elem_classes=["seed-row"]):
                seed = gr.Number(-1, label="Seed", precision=0, elem_id=f"{TAB}_seed", min_width=100, scale=4)
                random_seed = tool_button("🎲️", f"{TAB}_random_seed")
                reuse_seed = tool_button("♻️", f"{TAB}_reuse_seed")
                extra = gr.Checkbox(False, label="Extra", elem_id=f"{TAB}_subseed_show", scale=0, min_width=80)
            with gr.Row(elem_id=f"{TAB}_seed_extras", visible=False) as seed_extras:
                subseed = gr.Number(-1, label="Variation seed", precision=0, elem_id=f"{TAB}_subseed",
                                    min_width=100, scale=2)
                random_subseed = tool_button("🎲️", f"{TAB}_random_subseed")
                reuse_subseed = tool_button("♻️", f"{TAB}_reuse_subseed")
                subseed_strength = slider(0.0, 1.0, value=0.0, step=0.01, label="Variation strength",
                                          elem_id=f"{TAB}_subseed_strength", scale=2, min_width=160)
                resize_w = slider(0, 2048, value=0, step=8, precision=0, label="Resize seed from width",
                                  elem_id=f"{TAB}_seed_resize_from_w", scale=2, min_width=160)
                resize_h = slider(0, 2048, value=0, step=8, precision=0, label="Resize seed from height",
                                  elem_id=f"{TAB}_seed_resize_from_h", scale=2, min_width=160)
            with gr.Row(elem_id=f"{TAB}_other_settings"):
                tiling = gr.Checkbox(False, label="Tiling", elem_id=f"{TAB}_tiling", scale=0, min_width=100)
                clip_skip = slider(1, 12, value=default_clip_skip, step=1, precision=0, label="Clip skip",
                                   elem_id=f"{TAB}_clip_skip", scale=3)
        output = create_output_panel(TAB)

    fields = {"prompt": prompt, "negative_prompt": negative, "sampler_name": sampler, "scheduler": scheduler,
              "steps": steps, "width": width, "height": height, "n_iter": n_iter, "batch_size": batch_size,
              "cfg_scale": cfg_scale, "seed": seed, "extra": extra, "subseed": subseed,
              "subseed_strength": subseed_strength, "seed_resize_from_w": resize_w, "seed_resize_from_h": resize_h,
              "tiling": tiling, "clip_skip": clip_skip, "styles": style_dropdown}
    tab = Txt2ImgTab(fields, generate, interrupt, skip, output)

    # ------------------------------------------------------------- small helpers, all in the browser or quick
    for box, counter in ((prompt, prompt_counter), (negative, negative_counter)):
        box.change(token_counter_text, inputs=[box], outputs=[counter], queue=False, show_progress="hidden",
                   trigger_mode="always_last", api_visibility=PRIVATE)
    swap.click(None, inputs=[width, height], outputs=[width, height], js="(w, h) => [h, w]")
    random_seed.click(None, outputs=[seed], js="() => -1")
    random_subseed.click(None, outputs=[subseed], js="() => -1")
    for button, target, key in ((reuse_seed, seed, "seeds"), (reuse_subseed, subseed, "subseeds")):
        button.click(lambda generation, selected, key=key: _or_skip(seed_of_selected(generation, selected, key)),
                     inputs=[output.generation, output.selected], outputs=[target], queue=False,
                     show_progress="hidden", api_visibility=PRIVATE)
    extra.change(lambda shown: gr.update(visible=bool(shown)), inputs=[extra], outputs=[seed_extras],
                 queue=False, show_progress="hidden", api_visibility=PRIVATE)

    style_row = styles.StylesRow(style_dropdown, apply_styles, edit_styles)
    styles.connect(services, TAB, demo, style_row, prompt, negative)

    paste_button.click(_paste_handler(services, fields), inputs=[prompt], outputs=list(fields.values()),
                       show_progress="hidden", api_visibility=PRIVATE)

    # ------------------------------------------------------------- generation
    job_id = gr.State(None)   # this browser session's job: Interrupt and Skip act on it and nothing else
    busy_outputs = [generate, interrupt, skip, output.progress, output.preview, output.gallery, job_id]
    outputs = busy_outputs + [output.info, output.generation, output.selected]
    names = list(fields)

    def idle() -> dict:
        return {generate: gr.update(visible=True), interrupt: gr.update(visible=False),
                skip: gr.update(visible=False), output.progress: gr.update(visible=False, value=""),
                output.preview: gr.update(visible=False, value=None), output.gallery: gr.update(visible=True),
                job_id: None}

    async def run(*values):
        data = request_data(dict(zip(names, values)))
        try:
            request = validate_request(data, services.registry, services.networks)
        except ValidationError as error:
            raise gr.Error(escape_multiline(validation_message(error)), title="Invalid settings",
                           print_exception=False) from None
        try:
            job = services.submit_txt2img(request)
        except QueueFull as error:
            raise gr.Error(html.escape(str(error)), title="Queue full", print_exception=False) from None
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
            gr.Warning(html.escape(job.error or "generation failed"), title="Error", duration=15)
            yield {**idle(), output.info: error_html(f"Error: {job.error}")}
        elif result is None or not result.images:
            message = ("Cancelled before it started." if job.state == "cancelled"
                       else "Interrupted: no image was finished.")
            yield {**idle(), output.info: error_html(message)}
        else:
            if result.warnings:   # add-ons that were not applied (missing, unsupported, for another model)
                gr.Warning(escape_multiline("\n".join(result.warnings)), title="Extra networks", duration=15)
            yield {**idle(), output.gallery: gr.update(visible=True, value=result.images, selected_index=None),
                   output.info: infotext_html(result.infotexts[0], seconds),
                   output.generation: generation_state(result, seconds), output.selected: None}

    event = generate.click(run, inputs=[fields[name] for name in names], outputs=outputs, show_progress="hidden",
                           concurrency_limit=None, api_visibility=PRIVATE)
    event.failure(idle, outputs=busy_outputs, queue=False, show_progress="hidden", api_visibility=PRIVATE)
    interrupt.click(lambda current: _act(services.queue.interrupt, current), inputs=[job_id], queue=False,
                    show_progress="hidden", api_visibility=PRIVATE)
    skip.click(lambda current: _act(services.queue.skip, current), inputs=[job_id], queue=False,
               show_progress="hidden", api_visibility=PRIVATE)
    return tab


def _or_skip(value):
    return gr.skip() if value is None else value


def _act(method, job: str | None) -> None:
    if job:
        method(job)


def _paste_handler(services, fields: dict):
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
        if warnings:
            gr.Warning(escape_multiline("Not pasted: " + "\n".join(warnings)), title="Paste")
        updates: dict = {}
        for name, value in parsed.items():
            component = fields.get(name)
            if component is None or value is None:
                continue
            if name in ("seed_resize_from_w", "seed_resize_from_h") and value <= 0:
                value = 0
            updates[component] = value
        variation = parsed.get("subseed_strength") or 0
        resized = (parsed.get("seed_resize_from_w") or 0) > 0
        if variation > 0 or resized:
            updates[fields["extra"]] = True
        return updates
    return handler
