"""The Checkpoint Merger tab (A1111 ui_checkpoint_merger.py): the form, and following the merge job."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass

import gradio as gr

from modules.models import merger
from modules.jobs import QueueFull
from modules.ui import progress
from modules.ui.common import PRIVATE, message_html, slider, tool_button
from modules.ui.output import error_html

TAB = "modelmerger"
DESCRIPTIONS = {   # A1111's texts
    merger.NO_INTERPOLATION: "No interpolation will be used. Requires one model; A. "
                             "Allows for format conversion and VAE baking.",
    merger.WEIGHTED_SUM: "A weighted sum will be used for interpolation. Requires two models; A and B. "
                         "The result is calculated as A * (1 - M) + B * M",
    merger.ADD_DIFFERENCE: "The difference between the last two models will be added to the first. "
                           "Requires three models; A, B and C. The result is calculated as A + (B - C) * M",
}
# The form's components, in the order the Merge button hands them over.
FIELDS = ("primary", "secondary", "tertiary", "method", "multiplier", "save_as_half", "custom_name", "config_source",
          "bake_in_vae", "discard_weights", "save_metadata", "add_merge_recipe", "copy_metadata_fields",
          "metadata_json", "overwrite")


@dataclass
class MergerTab:
    primary: gr.Dropdown
    secondary: gr.Dropdown
    tertiary: gr.Dropdown
    merge: gr.Button
    result: gr.HTML


def description_html(method: str) -> str:
    return f"<p>{html.escape(DESCRIPTIONS.get(method, ''))}</p>"


def checkpoint_titles(services) -> list[str]:
    return [info.title for info in services.registry.items()]


def vae_choices(services) -> list[str]:
    return [merger.NO_VAE, *services.networks.vaes.names()]


def merge_request(values: dict) -> merger.MergeRequest:
    """The form's values (keys of FIELDS) → the backend's request; empty dropdowns become ""."""
    data = {key: values[key] for key in FIELDS}
    for key in ("primary", "secondary", "tertiary", "custom_name", "discard_weights", "metadata_json"):
        data[key] = data[key] or ""
    data["bake_in_vae"] = data["bake_in_vae"] or merger.NO_VAE
    data["multiplier"] = float(data["multiplier"])
    data["config_source"] = int(data["config_source"] or 0)
    for key in ("save_as_half", "save_metadata", "add_merge_recipe", "copy_metadata_fields", "overwrite"):
        data[key] = bool(data[key])
    return merger.MergeRequest(**data)


def read_metadata_json(services, names: list[str | None]) -> str:
    """A1111's "Read metadata from selected checkpoints": their metadata as editable JSON."""
    try:
        metadata = merger.selected_metadata(services.registry, [name for name in names if name])
    except ValueError as error:
        raise gr.Error(html.escape(str(error)), title="Metadata", print_exception=False) from None
    return json.dumps(metadata, indent=4, ensure_ascii=False)


async def run_merge(services, values: dict):
    """Submit the merge and follow it: yields (result HTML, checkpoint titles once the job has ended, else None)."""
    try:
        job = services.submit_merge(merge_request(values))
    except QueueFull as error:
        raise gr.Error(html.escape(str(error)), title="Queue full", print_exception=False) from None
    yield progress.progress_html(job, services.queue.position(job)), None
    async for snapshot in progress.watch(job, services.queue):
        yield snapshot.html, None
    titles = checkpoint_titles(services)
    if job.state == "failed":
        gr.Warning(html.escape(job.error or "merging failed"), title="Checkpoint Merger", duration=15)
        yield error_html(f"Error merging checkpoints: {job.error}"), titles
    elif job.result is None:
        yield message_html("Interrupted: no checkpoint was written.", "warning"), titles
    else:
        yield message_html(f"Checkpoint saved to {job.result.filename}\nListed as {job.result.title}"), titles


def create_tab(services, demo: gr.Blocks | None = None, topbar=None) -> MergerTab:
    titles = checkpoint_titles(services)
    with gr.Row(equal_height=False, elem_id=f"{TAB}_row"):
        with gr.Column(variant="compact"):
            description = gr.HTML(description_html(merger.WEIGHTED_SUM), elem_id="modelmerger_interp_description",
                                  js_on_load=None)
            dropdowns, refreshes = [], []
            # One model a line: three side by side in half the page cut checkpoint titles off.
            with gr.Column(elem_id="modelmerger_models"):
                for role, label, letter in (("primary", "Primary model (A)", "A"),
                                            ("secondary", "Secondary model (B)", "B"),
                                            ("tertiary", "Tertiary model (C)", "C")):
                    with gr.Row(equal_height=False):
                        dropdowns.append(gr.Dropdown(titles, value=None, label=label, interactive=True,
                                                     filterable=True, allow_custom_value=True,
                                                     elem_id=f"modelmerger_{role}_model_name"))
                        refreshes.append(tool_button("🔄", f"refresh_checkpoint_{letter}"))
            primary, secondary, tertiary = dropdowns
            custom_name = gr.Textbox(label="Custom Name (Optional)", elem_id="modelmerger_custom_name",
                                     placeholder="A file name without folders; .safetensors is added")
            multiplier = slider(0.0, 1.0, value=0.3, step=0.05, label="Multiplier (M) - set to 0 to get model A",
                                elem_id="modelmerger_interp_amount")
            method = gr.Radio(list(merger.METHODS), value=merger.WEIGHTED_SUM, label="Interpolation Method",
                              elem_id="modelmerger_interp_method")
            with gr.Row():
                gr.Radio(["safetensors"], value="safetensors", label="Checkpoint format", interactive=False,
                         info="safetensors only: a .ckpt is a pickle, a file that can carry code",
                         elem_id="modelmerger_checkpoint_format")
                save_as_half = gr.Checkbox(False, label="Save as float16", elem_id="modelmerger_save_as_half")
                overwrite = gr.Checkbox(False, label="Overwrite existing file", elem_id="modelmerger_overwrite")
            with gr.Row():
                config_source = gr.Radio(list(merger.CONFIG_SOURCES), value=merger.CONFIG_SOURCES[0], type="index",
                                         label="Copy config from", elem_id="modelmerger_config_method")
                with gr.Row():
                    bake_in_vae = gr.Dropdown(vae_choices(services), value=merger.NO_VAE, label="Bake in VAE",
                                              elem_id="modelmerger_bake_in_vae", interactive=True,
                                              allow_custom_value=True)
                    refresh_vae = tool_button("🔄", "modelmerger_refresh_bake_in_vae")
            discard_weights = gr.Textbox("", label="Discard weights with matching name",
                                         placeholder="A regular expression, e.g. ^model_ema\\.",
                                         elem_id="modelmerger_discard_weights")
            with gr.Accordion("Metadata", open=False, elem_id="modelmerger_metadata"):
                with gr.Row():
                    save_metadata = gr.Checkbox(True, label="Save metadata", elem_id="modelmerger_save_metadata")
                    add_merge_recipe = gr.Checkbox(True, label="Add merge recipe metadata",
                                                   elem_id="modelmerger_add_recipe")
                    copy_metadata_fields = gr.Checkbox(True, label="Copy metadata from merged models",
                                                       elem_id="modelmerger_copy_metadata")
                metadata_json = gr.Textbox("{}", label="Metadata in JSON format", lines=6,
                                           elem_id="modelmerger_metadata_json")
                read_metadata = gr.Button("Read metadata from selected checkpoints",
                                          elem_id="modelmerger_read_metadata")
            merge = gr.Button("Merge", variant="primary", elem_id="modelmerger_merge")
        with gr.Column(variant="compact", elem_id="modelmerger_results_container"):
            result = gr.HTML("", elem_id="modelmerger_result", js_on_load=None)

    method.change(description_html, inputs=[method], outputs=[description], show_progress="hidden",
                  api_visibility=PRIVATE)

    def lists(rescan: bool):
        if rescan:
            services.refresh_checkpoints()
        names = checkpoint_titles(services)
        return [gr.update(choices=names) for _ in dropdowns]

    for button in refreshes:
        button.click(lambda: lists(True), outputs=dropdowns, show_progress="hidden", api_visibility=PRIVATE)

    def vae_list(rescan: bool):
        if rescan:
            services.networks.vaes.refresh()
        return gr.update(choices=vae_choices(services))

    refresh_vae.click(lambda: vae_list(True), outputs=[bake_in_vae], show_progress="hidden", api_visibility=PRIVATE)
    if demo is not None:   # checkpoints and VAEs added since start-up show on the next page load
        demo.load(lambda: (*lists(False), vae_list(False)), outputs=[*dropdowns, bake_in_vae],
                  show_progress="hidden", api_visibility=PRIVATE)
    read_metadata.click(lambda *names: read_metadata_json(services, list(names)), inputs=dropdowns,
                        outputs=[metadata_json], show_progress="hidden", api_visibility=PRIVATE)

    # The other checkpoint lists (the top bar's) get the new file too, as in A1111.
    listed = [*dropdowns, *([topbar.checkpoint] if topbar is not None else [])]
    components = dict(zip(FIELDS, (primary, secondary, tertiary, method, multiplier, save_as_half, custom_name,
                                   config_source, bake_in_vae, discard_weights, save_metadata, add_merge_recipe,
                                   copy_metadata_fields, metadata_json, overwrite)))

    async def on_merge(*values):
        async for text, names in run_merge(services, dict(zip(FIELDS, values))):
            if names is None:
                yield {result: text}
            else:
                yield {result: text, **{dropdown: gr.update(choices=names) for dropdown in listed}}

    merge.click(on_merge, inputs=list(components.values()), outputs=[result, *listed], show_progress="hidden",
                concurrency_limit=None, api_visibility=PRIVATE)
    return MergerTab(primary, secondary, tertiary, merge, result)
