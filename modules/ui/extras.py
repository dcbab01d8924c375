"""The Extras tab: upscale and restore faces in one image, a batch of files or a folder (A1111
ui_postprocessing.py and scripts/postprocessing_{upscale,gfpgan,codeformer}.py)."""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from pydantic import ValidationError

from modules import images
from modules.jobs import QueueFull
from modules.postprocess.postprocessing import validate_extras
from modules.ui import progress
from modules.ui.common import PRIVATE, escape_multiline, number, tool_button
from modules.ui.output import OutputPanel, create_output_panel, error_html, infotext_html
from modules.ui.image_inputs import named_refusals

TAB = "extras"
SINGLE, BATCH, DIRECTORY = "single_image", "batch_process", "batch_from_directory"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif")
RESTORERS = {"gfpgan_visibility": "GFPGAN", "codeformer_visibility": "CodeFormer"}

# ExtrasRequest field → the label the user sees, to name fields in validation messages.
LABELS = {"upscaling_resize": "Resize", "upscaling_resize_w": "Width", "upscaling_resize_h": "Height",
          "upscaling_crop": "Crop to fit", "upscaler_1": "Upscaler 1", "upscaler_2": "Upscaler 2",
          "extras_upscaler_2_visibility": "Upscaler 2 visibility", "gfpgan_visibility": "GFPGAN visibility",
          "codeformer_visibility": "CodeFormer visibility", "codeformer_weight": "CodeFormer weight",
          "resize_mode": "Resize mode", "show_extras_results": "Show result images"}


@dataclass
class ExtrasTab:
    image: gr.Image              # the Single Image input ("Send to extras" puts the image here)
    mode_tabs: gr.Tabs           # Single Image / Batch Process / Batch from Directory
    mode: gr.State               # the id of the sub-tab shown (SINGLE, BATCH or DIRECTORY)
    generate: gr.Button
    output: OutputPanel


def request_data(values: dict) -> dict:
    """Component values → the dict ExtrasRequest validates (strict types)."""
    data = dict(values)
    data["resize_mode"] = 1 if data.pop("resize_tab", "scale_by") == "scale_to" else 0
    for key in ("upscaling_resize_w", "upscaling_resize_h"):
        data[key] = number(data.get(key), int)
    for key in ("upscaling_resize", "extras_upscaler_2_visibility", "gfpgan_visibility", "codeformer_visibility",
                "codeformer_weight"):
        data[key] = number(data.get(key), float)
    data["upscaling_crop"] = bool(data.get("upscaling_crop"))
    data["show_extras_results"] = bool(data.get("show_extras_results"))
    return data


def validation_message(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        field = str(item["loc"][0]) if item.get("loc") else ""
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{LABELS.get(field, field)}: {message}" if field else message)
    return "\n".join(lines)


def directory_files(folder: str) -> list[Path]:
    """The image files directly in `folder`, by name; ValueError when it is not a folder."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ValueError(f"Input directory {folder!r} is not a folder on the server")
    return sorted(item for item in path.iterdir() if item.is_file() and item.suffix.lower() in IMAGE_SUFFIXES)


def collect_inputs(mode: str, image, files, input_dir: str, hide_dirs: bool) -> list[tuple]:
    """The images to process as [(image, file name)]; ValueError with a message for the user."""
    if mode == SINGLE:
        if image is None:
            raise ValueError("Extras: drop an image into Source first")
        return [(images.check_user_image(image, what="Source image"), "")]
    if mode == BATCH:
        paths = [Path(item if isinstance(item, str) else item.name) for item in files or []]
        if not paths:
            raise ValueError("Batch Process: add image files first")
        return [(_uploaded_image(path), path.name) for path in paths]
    if hide_dirs:
        raise ValueError("Batch from Directory is turned off on this server (--hide-ui-dir-config)")
    if not (input_dir or "").strip():
        raise ValueError("Batch from Directory: enter an input directory")
    paths = directory_files(input_dir.strip())
    if not paths:
        raise ValueError(f"Batch from Directory: no image files in {input_dir.strip()!r}")
    return [(images.load_image_file(path), path.name) for path in paths]


def _uploaded_image(path: Path):
    """A Batch Process file; a refusal names the file as the user knows it, not Gradio's temporary folder."""
    try:
        return images.load_image_file(path)
    except ValueError as error:
        raise ValueError(f"Batch Process: {path.name}: {str(error).removeprefix(f'{path}: ')}") from None


def restorer_info(services, name: str) -> str | None:
    """The slider's hint: which weights file to add, when the restorer's is missing."""
    return None if name in services.restorers.available() else services.restorers.missing_message(name)


def create_tab(services, demo: gr.Blocks | None = None) -> ExtrasTab:
    hide_dirs = bool(getattr(services.args, "hide_ui_dir_config", False))
    with gr.Row(equal_height=False, elem_id=f"{TAB}_row"):
        with gr.Column(variant="compact", elem_id=f"{TAB}_settings"):
            sources = _create_sources(hide_dirs)
            upscale = _create_upscale(services.upscalers.names())
            restore = _create_face_restoration(services)
        with gr.Column(elem_id=f"{TAB}_results_column"):
            with gr.Row(elem_id=f"{TAB}_generate_box", elem_classes=["generate-box"]):
                interrupt = gr.Button("Interrupt", elem_id=f"{TAB}_interrupt", visible=False, min_width=0)
                generate = gr.Button("Generate", elem_id=f"{TAB}_generate", variant="primary", min_width=0)
            output = create_output_panel(TAB, services)

    mode = gr.State(SINGLE)
    resize_tab = gr.State("scale_by")
    for state, tabs in ((mode, sources.tabs), (resize_tab, upscale.tabs)):
        for tab, value in tabs.items():
            tab.select(lambda value=value: value, outputs=[state], queue=False, show_progress="hidden",
                       api_visibility=PRIVATE)
    width, height = upscale.fields["upscaling_resize_w"], upscale.fields["upscaling_resize_h"]
    upscale.swap.click(None, inputs=[width, height], outputs=[width, height], js="(w, h) => [h, w]")
    _connect_model_lists(services, demo, upscale, restore)

    fields = {"resize_tab": resize_tab, **upscale.fields, **restore, "show_extras_results": sources.show_results}
    _connect_generate(services, sources, mode, fields, generate, interrupt, output, hide_dirs)
    return ExtrasTab(sources.image, sources.mode_tabs, mode, generate, output)


@dataclass
class _Sources:
    mode_tabs: gr.Tabs
    tabs: dict[gr.Tab, str]   # sub-tab → its id (SINGLE, BATCH, DIRECTORY)
    image: gr.Image
    files: gr.File
    input_dir: gr.Textbox
    output_dir: gr.Textbox
    show_results: gr.Checkbox


def _create_sources(hide_dirs: bool) -> _Sources:
    """Single Image / Batch Process / Batch from Directory: what to process."""
    with gr.Tabs(elem_id="mode_extras") as mode_tabs:
        with gr.Tab("Single Image", id=SINGLE, elem_id="extras_single_tab") as single_tab:
            image = named_refusals(gr.Image(label="Source", type="pil", image_mode=None,
                                            sources=["upload", "clipboard"], elem_id="extras_image",
                                            interactive=True, height=400))
        with gr.Tab("Batch Process", id=BATCH, elem_id="extras_batch_process_tab") as batch_tab:
            files = gr.File(label="Batch Process", file_count="multiple", file_types=["image"],
                            elem_id="extras_image_batch", interactive=True)
        with gr.Tab("Batch from Directory", id=DIRECTORY, elem_id="extras_batch_directory_tab") as dir_tab:
            input_dir = gr.Textbox(label="Input directory", interactive=not hide_dirs,
                                   placeholder="A folder on the machine the server runs on.",
                                   elem_id="extras_batch_input_dir")
            output_dir = gr.Textbox(label="Output directory", interactive=not hide_dirs,
                                    placeholder="Leave blank to save images to the default path.",
                                    elem_id="extras_batch_output_dir")
            show_results = gr.Checkbox(True, label="Show result images", elem_id="extras_show_extras_results")
    return _Sources(mode_tabs, {single_tab: SINGLE, batch_tab: BATCH, dir_tab: DIRECTORY}, image, files, input_dir,
                    output_dir, show_results)


@dataclass
class _Upscale:
    fields: dict[str, gr.components.Component]   # ExtrasRequest's upscaling fields → component
    tabs: dict[gr.Tab, str]                      # "Scale by" / "Scale to" → the resize tab's id
    swap: gr.Button
    refresh: gr.Button


def _create_upscale(upscalers: list[str]) -> _Upscale:
    """Scale by / Scale to, the two upscalers and how much of the second shows."""
    with gr.Group(elem_id="extras_upscale"):
        with gr.Tabs(elem_id="extras_resize_mode"):
            with gr.Tab("Scale by", id="scale_by", elem_id="extras_scale_by_tab") as scale_by_tab:
                resize = gr.Slider(1.0, 8.0, value=4.0, step=0.05, label="Resize", buttons=[],
                                   elem_id="extras_upscaling_resize")
            with gr.Tab("Scale to", id="scale_to", elem_id="extras_scale_to_tab") as scale_to_tab:
                with gr.Row():
                    resize_w = gr.Slider(64, 8192, value=512, step=8, precision=0, label="Width",
                                         buttons=[], elem_id="extras_upscaling_resize_w")
                    swap = tool_button("⇅", "upscaling_res_switch_btn")
                    resize_h = gr.Slider(64, 8192, value=512, step=8, precision=0, label="Height",
                                         buttons=[], elem_id="extras_upscaling_resize_h")
                crop = gr.Checkbox(True, label="Crop to fit", elem_id="extras_upscaling_crop")
        with gr.Row():
            upscaler_1 = gr.Dropdown(upscalers, value="None", label="Upscaler 1", elem_id="extras_upscaler_1")
            upscaler_2 = gr.Dropdown(upscalers, value="None", label="Upscaler 2", elem_id="extras_upscaler_2")
            refresh = tool_button("🔄", "extras_refresh_upscalers")
        upscaler_2_visibility = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="Upscaler 2 visibility",
                                          buttons=[], elem_id="extras_upscaler_2_visibility")
    fields = {"upscaling_resize": resize, "upscaling_resize_w": resize_w, "upscaling_resize_h": resize_h,
              "upscaling_crop": crop, "upscaler_1": upscaler_1, "upscaler_2": upscaler_2,
              "extras_upscaler_2_visibility": upscaler_2_visibility}
    return _Upscale(fields, {scale_by_tab: "scale_by", scale_to_tab: "scale_to"}, swap, refresh)


def _create_face_restoration(services) -> dict[str, gr.components.Component]:
    with gr.Group(elem_id="extras_face_restoration"):
        gfpgan = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="GFPGAN visibility", buttons=[],
                           info=restorer_info(services, "GFPGAN"), elem_id="extras_gfpgan_visibility")
        codeformer = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="CodeFormer visibility", buttons=[],
                               info=restorer_info(services, "CodeFormer"), elem_id="extras_codeformer_visibility")
        codeformer_weight = gr.Slider(0.0, 1.0, value=0.0, step=0.001, buttons=[],
                                      label="CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
                                      elem_id="extras_codeformer_weight")
    return {"gfpgan_visibility": gfpgan, "codeformer_visibility": codeformer, "codeformer_weight": codeformer_weight}


def _connect_model_lists(services, demo: gr.Blocks | None, upscale: _Upscale,
                         restore: dict[str, gr.components.Component]) -> None:
    """🔄 rescans the upscalers; a face restorer without its weights says which file to add."""
    upscaler_1, upscaler_2 = upscale.fields["upscaler_1"], upscale.fields["upscaler_2"]
    gfpgan, codeformer = restore["gfpgan_visibility"], restore["codeformer_visibility"]

    def upscaler_lists(rescan: bool):
        if rescan:
            services.upscalers.refresh()
        names = services.upscalers.names()
        return gr.update(choices=names), gr.update(choices=names)

    upscale.refresh.click(lambda: upscaler_lists(True), outputs=[upscaler_1, upscaler_2], show_progress="hidden",
                          api_visibility=PRIVATE)
    for slider, name in ((gfpgan, "GFPGAN"), (codeformer, "CodeFormer")):
        def check_restorer(value, name=name):
            missing = restorer_info(services, name)
            if value and missing:
                raise gr.Error(html.escape(missing), title=name, print_exception=False)
        # Moving it off 0 without the weights says which file to add, and the slider goes back to 0.
        slider.input(check_restorer, inputs=[slider], queue=False, show_progress="hidden", trigger_mode="always_last",
                     api_visibility=PRIVATE).failure(lambda: 0.0, outputs=[slider], queue=False,
                                                     show_progress="hidden", api_visibility=PRIVATE)
    if demo is not None:   # model files added since start-up show on the next page load
        demo.load(lambda: (*upscaler_lists(False), gr.update(info=restorer_info(services, "GFPGAN")),
                           gr.update(info=restorer_info(services, "CodeFormer"))),
                  outputs=[upscaler_1, upscaler_2, gfpgan, codeformer], show_progress="hidden",
                  api_visibility=PRIVATE)


def _connect_generate(services, sources: _Sources, mode: gr.State, fields: dict[str, gr.components.Component],
                      generate: gr.Button, interrupt: gr.Button, output: OutputPanel, hide_dirs: bool) -> None:
    """Generate: one job over the chosen images, followed with progress; Interrupt stops it."""
    names = list(fields)
    job_id = gr.State(None)
    busy_outputs = [generate, interrupt, output.progress, job_id]
    outputs = busy_outputs + [output.gallery, output.info, output.generation, output.selected]

    def idle() -> dict:
        return {generate: gr.update(visible=True), interrupt: gr.update(visible=False),
                output.progress: gr.update(visible=False, value=""), job_id: None}

    async def run(current_mode, image, batch_files, folder, out_folder, *values):
        data = request_data(dict(zip(names, values)))
        try:
            request = validate_extras(data, services.upscalers)
        except ValidationError as error:
            raise gr.Error(escape_multiline(validation_message(error)), title="Invalid settings",
                           print_exception=False) from None
        for key, name in RESTORERS.items():
            missing = restorer_info(services, name)
            if getattr(request, key) > 0 and missing:
                raise gr.Error(html.escape(missing), title=name, print_exception=False)
        try:
            inputs = collect_inputs(current_mode, image, batch_files, folder, hide_dirs)
        except ValueError as error:
            raise gr.Error(escape_multiline(str(error)), title="Extras", print_exception=False) from None
        target = None
        if current_mode == DIRECTORY and (out_folder or "").strip():
            target = Path(out_folder.strip()).expanduser()
            if target.exists() and not target.is_dir():
                raise gr.Error(html.escape(f"Output directory {out_folder.strip()!r} is a file, not a folder"),
                               title="Extras", print_exception=False)
        try:
            job = services.submit_extras(request, inputs, output_dir=target)
        except QueueFull as error:
            raise gr.Error(html.escape(str(error)), title="Queue full", print_exception=False) from None
        yield {generate: gr.update(visible=False), interrupt: gr.update(visible=True), job_id: job.id,
               output.progress: gr.update(visible=True,
                                          value=progress.progress_html(job, services.queue.position(job)))}
        async for snapshot in progress.watch(job, services.queue):
            yield {output.progress: snapshot.html}
        seconds = (job.finished or time.time()) - (job.started or job.created)
        result = job.result
        if job.state == "failed":
            gr.Warning(html.escape(job.error or "processing failed"), title="Error", duration=15)
            yield {**idle(), output.info: error_html(f"Error: {job.error}")}
        elif result is None or not result.images:
            yield {**idle(), output.info: error_html("Interrupted: no image was finished.")}
        else:
            shown = result.images if request.show_extras_results else []
            # "Send to" takes each image's own generation parameters, not the postprocessing text shown.
            parameters = [image.info.get("parameters", "") for image in result.images]
            yield {**idle(), output.gallery: gr.update(value=shown, selected_index=None),
                   output.info: result.html_info + infotext_html("", seconds),
                   output.generation: {"infotexts": list(result.infotexts), "parameters": parameters,
                                       "seconds": seconds},
                   output.selected: None}

    event_inputs = [mode, sources.image, sources.files, sources.input_dir, sources.output_dir, *fields.values()]
    event = generate.click(run, inputs=event_inputs, outputs=outputs, show_progress="hidden", concurrency_limit=None,
                           api_visibility=PRIVATE)
    event.failure(idle, outputs=busy_outputs, queue=False, show_progress="hidden", api_visibility=PRIVATE)
    interrupt.click(lambda current: services.queue.interrupt(current) if current else None, inputs=[job_id],
                    queue=False, show_progress="hidden", api_visibility=PRIVATE)
