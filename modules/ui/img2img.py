"""The img2img tab (A1111 layout): mode sub-tabs (img2img, sketch, inpaint, inpaint sketch, inpaint upload,
batch) → init image and mask → GenerationRequest → job → gallery. Shares its top row, seed row, refiner and
generate loop with txt2img."""
from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageEnhance

from modules import images, masking
from modules.output import infotext
from modules.diffusion import samplers
from modules.ui import controlnet, txt2img
from modules.ui import scripts as scripts_ui
from modules.ui.common import PRIVATE, number, slider, tool_button
from modules.ui.output import OutputPanel, create_output_panel
from modules.ui.txt2img import Submission
from modules.ui.image_inputs import named_refusals

log = logging.getLogger(__name__)

TAB = "img2img"
# Sub-tab id → the elem_id of its panel (A1111's), which script.js uses to tell which one is shown.
MODES = {"img2img": "img2img_img2img_tab", "sketch": "img2img_img2img_sketch_tab",
         "inpaint": "img2img_inpaint_tab", "inpaint_sketch": "img2img_inpaint_sketch_tab",
         "inpaint_upload": "img2img_inpaint_upload_tab", "batch": "img2img_batch_tab"}
INPAINT_MODES = ("inpaint", "inpaint_sketch", "inpaint_upload")
MASK_MODES = ["Inpaint masked", "Inpaint not masked"]
FILL_MODES = ["fill", "original", "latent noise", "latent nothing"]
AREAS = ["Whole picture", "Only masked"]
PNG_INFO_PROPS = ["Prompt", "Negative prompt", "Seed", "CFG scale", "Sampler", "Steps", "Model hash"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif")

# Keys of Img2ImgTab.fields that are not request fields: the inputs, resize-by and batch controls.
IMAGE_KEYS = ("init_img", "sketch", "init_img_with_mask", "inpaint_color_sketch", "init_img_inpaint",
              "init_mask_inpaint")
UI_KEYS = IMAGE_KEYS + ("mode", "resize_tab", "scale_by", "mask_alpha", "batch_input_dir", "batch_output_dir",
                        "batch_inpaint_mask_dir", "batch_use_png_info", "batch_png_info_dir", "batch_png_info_props")

LABELS = {**txt2img.LABELS, "init_images": "Image", "mask": "Mask", "resize_mode": "Resize mode",
          "mask_blur": "Mask blur", "inpainting_fill": "Masked content", "inpaint_full_res": "Inpaint area",
          "inpaint_full_res_padding": "Only masked padding, pixels", "inpainting_mask_invert": "Mask mode",
          "selected_script": "Script", "extension_scripts": "Script"}


class InputError(ValueError):
    """Missing or unusable input images; the message is for the user."""


# ------------------------------------------------------------------ pure helpers: images, masks, sizes

def painted_mask(editor: dict | None) -> Image.Image | None:
    """The union of the ImageEditor's painted layers as an "L" mask (255 where painted), None if nothing was."""
    layers = [layer for layer in (editor or {}).get("layers") or [] if layer is not None]
    if not layers:
        return None
    size = editor["background"].size if editor.get("background") is not None else layers[0].size
    alpha = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers:
        channel = layer.convert("RGBA").getchannel("A")
        if channel.size != size:
            channel = channel.resize(size, Image.Resampling.NEAREST)
        alpha |= np.asarray(channel) > 0
    if not alpha.any():
        return None
    return Image.fromarray(alpha.astype(np.uint8) * 255, "L")


def sketch_mask(background: Image.Image, composite: Image.Image, transparency: float = 0) -> Image.Image | None:
    """Inpaint sketch: repaint where the sketch changed the picture; "Mask transparency" (0–100) dims the mask."""
    changed = masking.sketch_mask(masking.flatten(background), masking.flatten(composite).resize(background.size))
    if changed.getbbox() is None:
        return None
    return ImageEnhance.Brightness(changed).enhance(1 - float(transparency or 0) / 100)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """"Resize by": the input size times `scale`, rounded to multiples of 8 (at least 64)."""
    width, height = size
    return (max(64, int(round(width * scale / 8)) * 8), max(64, int(round(height * scale / 8)) * 8))


def init_and_mask(mode: str, values: dict[str, Any], background: str = "#ffffff",
                  ) -> tuple[Image.Image, Image.Image | None]:
    """The init image and mask of the chosen sub-tab; InputError says what is missing."""
    if mode == "img2img":
        image = values.get("init_img")
        if image is None:
            raise InputError("img2img: upload an image first.")
        return masking.flatten(image, background), None
    if mode in ("sketch", "inpaint", "inpaint_sketch"):
        editor = values.get({"sketch": "sketch", "inpaint": "init_img_with_mask",
                             "inpaint_sketch": "inpaint_color_sketch"}[mode]) or {}
        if editor.get("background") is None:
            raise InputError(f"{mode.replace('_', ' ').capitalize()}: upload an image first.")
        if mode == "sketch":
            return masking.flatten(editor.get("composite") or editor["background"], background), None
        if mode == "inpaint":
            mask = painted_mask(editor)
            if mask is None:
                raise InputError("Inpaint: paint over the part of the image to repaint first.")
            return masking.flatten(editor["background"], background), mask
        composite = editor.get("composite") or editor["background"]
        mask = sketch_mask(editor["background"], composite, values.get("mask_alpha") or 0)
        if mask is None:
            raise InputError("Inpaint sketch: draw over the part of the image to repaint first.")
        return masking.flatten(composite, background), mask
    if mode == "inpaint_upload":
        image, mask = values.get("init_img_inpaint"), values.get("init_mask_inpaint")
        if image is None:
            raise InputError("Inpaint upload: upload an image first.")
        if mask is None:
            raise InputError("Inpaint upload: upload a mask too (white = repaint).")
        return masking.flatten(image, background), mask   # alpha or grey, resized by the backend
    raise InputError(f"unknown img2img mode {mode!r}")


def request_data(values: dict[str, Any], background: str = "#ffffff") -> dict[str, Any]:
    """Component values → the dict GenerationRequest validates: init image and mask of the selected mode,
    "Resize by" turned into a size, the selected script's arguments. Raises InputError without an image."""
    values = dict(values)
    mode = values.get("mode") or "img2img"
    data = {key: value for key, value in values.items() if key not in UI_KEYS}
    data = txt2img.request_data(data)
    if mode != "batch":
        init, mask = init_and_mask(mode, values, background)
        data["init_images"], data["mask"] = [init], mask
        if values.get("resize_tab") == "by":
            data["width"], data["height"] = scaled_size(init.size, float(values.get("scale_by") or 1))
    for key in ("resize_mode", "inpainting_fill", "inpainting_mask_invert", "mask_blur", "inpaint_full_res_padding"):
        if key in data:
            data[key] = number(data[key], int)
    if "inpaint_full_res" in data:   # the radio's index: 1 = "Only masked"
        data["inpaint_full_res"] = data["inpaint_full_res"] == 1
    return data


def png_info_overrides(data: dict[str, Any], text: str | None, props: list[str], registry=None) -> dict[str, Any]:
    """Batch "PNG info": the chosen fields of an image's infotext over the tab's values (prompts appended)."""
    if not text or not props:
        return data
    data = dict(data)
    parsed = infotext.parse_infotext(text)
    fields = infotext.infotext_to_request_fields(parsed)["fields"]
    for prop, key in (("Prompt", "prompt"), ("Negative prompt", "negative_prompt")):
        if prop in props and fields.get(key):
            data[key] = f"{data.get(key) or ''} {fields[key]}".strip()
    for prop, key in (("Seed", "seed"), ("CFG scale", "cfg_scale"), ("Steps", "steps")):
        if prop in props and key in fields:
            data[key] = fields[key]
    if "Sampler" in props and fields.get("sampler_name"):
        try:
            data["sampler_name"], data["scheduler"] = samplers.resolve(fields["sampler_name"], fields.get("scheduler"))
        except ValueError as error:
            log.warning("PNG info sampler not used: %s", error)
    if "Model hash" in props and parsed.get("Model hash") and registry is not None:
        info = registry.find(str(parsed["Model hash"]))
        if info is not None:
            data["checkpoint"] = info.name
    return data


def batch_files(folder: str) -> list[Path]:
    directory = Path(folder).expanduser()
    if not directory.is_dir():
        raise InputError(f"Batch: input directory {folder!r} is not a folder.")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"Batch: no images in {folder!r}.")
    return files


def _mask_for(folder: str, image_path: Path) -> Path | None:
    matches = sorted(p for p in Path(folder).expanduser().glob(f"{image_path.stem}.*")
                     if p.suffix.lower() in IMAGE_SUFFIXES)
    return matches[0] if matches else None


# ------------------------------------------------------------------ the tab

@dataclass
class Img2ImgTab:
    fields: dict[str, gr.components.Component]   # request field (plus UI-only keys, see UI_KEYS) → component
    mode_tabs: gr.Tabs
    images: dict[str, gr.components.Component]   # sub-tab id → the component a sent image goes to
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    output: OutputPanel


def _editor(elem_id: str, brush: gr.Brush) -> gr.ImageEditor:
    return named_refusals(gr.ImageEditor(type="pil", image_mode="RGBA", sources=["upload", "clipboard"],
                                         label="Image for img2img", show_label=False, elem_id=elem_id, brush=brush,
                                         layers=False, transforms=[], height=480, canvas_size=(512, 512)))


def _image(elem_id: str, label: str) -> gr.Image:
    return named_refusals(gr.Image(type="pil", image_mode="RGBA", sources=["upload", "clipboard"], label=label,
                                   show_label=False, elem_id=elem_id, height=480))


def _create_batch(services) -> dict[str, gr.components.Component]:
    hidden = bool(getattr(services.args, "hide_ui_dir_config", False))
    gr.HTML("<p>Process images in a directory on the same machine where the server is running.<br>"
            "Use an empty output directory to save pictures normally instead of writing to the output directory."
            "<br>Add inpaint batch mask directory to enable inpaint batch processing.</p>"
            + ("<p><b>Disabled by the --hide-ui-dir-config flag.</b></p>" if hidden else ""), js_on_load=None)
    fields = {
        "batch_input_dir": gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir",
                                      interactive=not hidden),
        "batch_output_dir": gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir",
                                       interactive=not hidden),
        "batch_inpaint_mask_dir": gr.Textbox(label="Inpaint batch mask directory (required for inpaint batch "
                                                   "processing only)", elem_id="img2img_batch_inpaint_mask_dir",
                                             interactive=not hidden),
    }
    with gr.Accordion("PNG info", open=False, elem_id="img2img_batch_png_info"):
        fields["batch_use_png_info"] = gr.Checkbox(False, label="Append png info to prompts",
                                                   elem_id="img2img_batch_use_png_info")
        fields["batch_png_info_dir"] = gr.Textbox(label="PNG info directory", elem_id="img2img_batch_png_info_dir",
                                                  placeholder="Leave empty to use input directory",
                                                  interactive=not hidden)
        fields["batch_png_info_props"] = gr.CheckboxGroup(PNG_INFO_PROPS, value=[], label="Parameters to take "
                                                          "from png info", elem_id="img2img_batch_png_info_props")
    return fields


# script.js reads which mode sub-tab and which resize tab are shown (as A1111's submit_img2img does): a tab
# switched by "Send to" fires no select event, so the page is the only place that knows.
_MODE_JS = """(...args) => {{ args[{mode}] = img2imgSelectedTab({modes}, 'img2img');
  args[{resize}] = img2imgSelectedTab({{to: 'img2img_tab_resize_to', by: 'img2img_tab_resize_by'}}, 'to');
  return args; }}"""


def create_tab(services, demo: gr.Blocks | None = None, topbar=None) -> Img2ImgTab:
    """The tab; `demo` (to refresh the styles on page load) and `topbar` (for checkpoint cards) are optional."""
    options = services.options
    top = txt2img.create_toprow(services, TAB, demo, topbar, f"{TAB}_paste")
    fields: dict[str, gr.components.Component] = {"prompt": top.prompt, "negative_prompt": top.negative}

    with gr.Row(elem_id=f"{TAB}_extra_networks_and_results", equal_height=False):
        with gr.Column(elem_id=f"{TAB}_settings", scale=1, min_width=360):
            with gr.Tabs(elem_id="mode_img2img") as mode_tabs:
                with gr.Tab("img2img", id="img2img", elem_id=MODES["img2img"]):
                    fields["init_img"] = _image("img2img_image", "Image for img2img")
                with gr.Tab("Sketch", id="sketch", elem_id=MODES["sketch"]):
                    fields["sketch"] = _editor("img2img_sketch", gr.Brush(color_mode="defaults"))
                with gr.Tab("Inpaint", id="inpaint", elem_id=MODES["inpaint"]):
                    fields["init_img_with_mask"] = _editor("img2maskimg", gr.Brush(colors=["#ffffff"],
                                                                                   color_mode="fixed"))
                with gr.Tab("Inpaint sketch", id="inpaint_sketch", elem_id=MODES["inpaint_sketch"]):
                    fields["inpaint_color_sketch"] = _editor("inpaint_sketch", gr.Brush(color_mode="defaults"))
                with gr.Tab("Inpaint upload", id="inpaint_upload", elem_id=MODES["inpaint_upload"]):
                    fields["init_img_inpaint"] = _image("img_inpaint_base", "Image for img2img")
                    fields["init_mask_inpaint"] = _image("img_inpaint_mask", "Mask")
                with gr.Tab("Batch", id="batch", elem_id=MODES["batch"]):
                    fields.update(_create_batch(services))
            # Filled in by script.js when Generate is pressed (see _MODE_JS).
            fields["mode"] = gr.Textbox("img2img", visible="hidden", elem_id=f"{TAB}_selected_mode")
            fields["resize_tab"] = gr.Textbox("to", visible="hidden", elem_id=f"{TAB}_selected_resize_tab")

            fields["resize_mode"] = gr.Radio(list(masking.RESIZE_MODES), value=masking.RESIZE_MODES[0], type="index",
                                             label="Resize mode",
                                             elem_id="resize_mode")
            with gr.Row(elem_id=f"sampler_selection_{TAB}"):
                fields["sampler_name"] = gr.Dropdown(samplers.sampler_names(), value=samplers.sampler_names()[0],
                                                     label="Sampling method", elem_id=f"{TAB}_sampling",
                                                     filterable=True)
                fields["scheduler"] = gr.Dropdown(samplers.schedule_labels(), value=samplers.AUTOMATIC,
                                                  label="Schedule type", elem_id=f"{TAB}_scheduler")
            fields["steps"] = slider(1, 150, value=20, step=1, precision=0, label="Sampling steps",
                                     elem_id=f"{TAB}_steps")
            with gr.Row(equal_height=False):
                with gr.Column(elem_id=f"{TAB}_column_size", scale=4, min_width=160):
                    with gr.Tabs(elem_id=f"{TAB}_tabs_resize"):
                        with gr.Tab("Resize to", id="to", elem_id=f"{TAB}_tab_resize_to"):
                            with gr.Row(equal_height=False):
                                with gr.Column(scale=4, min_width=120):
                                    width = slider(64, 2048, value=512, step=8, precision=0, label="Width",
                                                   elem_id=f"{TAB}_width")
                                    height = slider(64, 2048, value=512, step=8, precision=0, label="Height",
                                                    elem_id=f"{TAB}_height")
                                with gr.Column(scale=0, min_width=0, elem_classes=["dimensions-tools"]):
                                    swap = tool_button("⇅", f"{TAB}_res_switch_btn")
                                    detect = tool_button("📐", f"{TAB}_detect_image_size_btn")
                        with gr.Tab("Resize by", id="by", elem_id=f"{TAB}_tab_resize_by"):
                            fields["scale_by"] = slider(0.05, 4.0, value=1.0, step=0.05, label="Scale",
                                                        elem_id=f"{TAB}_scale")
                            scale_preview = gr.HTML("", elem_id=f"{TAB}_scale_resolution_preview", js_on_load=None)
                with gr.Column(elem_id=f"{TAB}_column_batch", scale=2, min_width=120):
                    fields["n_iter"] = slider(1, 100, value=1, step=1, precision=0, label="Batch count",
                                              elem_id=f"{TAB}_batch_count")
                    fields["batch_size"] = slider(1, 8, value=1, step=1, precision=0, label="Batch size",
                                                  elem_id=f"{TAB}_batch_size")
            fields["width"], fields["height"] = width, height
            fields["cfg_scale"] = slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id=f"{TAB}_cfg_scale")
            fields["denoising_strength"] = slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                                  elem_id=f"{TAB}_denoising_strength")
            seed_row = txt2img.create_seed_row(TAB)
            fields.update(seed_row.fields)
            with gr.Row(elem_id=f"{TAB}_other_settings"):
                fields["tiling"] = gr.Checkbox(False, label="Tiling", elem_id=f"{TAB}_tiling", scale=0, min_width=100)
                fields["clip_skip"] = slider(1, 12, value=int(options.CLIP_stop_at_last_layers), step=1, precision=0,
                                             label="Clip skip", elem_id=f"{TAB}_clip_skip", scale=3)
            with gr.Group(elem_id="inpaint_controls", elem_classes=["inpaint-controls"]):
                with gr.Row():
                    fields["mask_blur"] = slider(0, 64, value=4, step=1, precision=0, label="Mask blur",
                                                 elem_id=f"{TAB}_mask_blur")
                    fields["mask_alpha"] = slider(0, 100, value=0, step=1, label="Mask transparency",
                                                  elem_id=f"{TAB}_mask_alpha", elem_classes=["inpaint-sketch-only"])
                fields["inpainting_mask_invert"] = gr.Radio(MASK_MODES, value=MASK_MODES[0], type="index",
                                                            label="Mask mode", elem_id=f"{TAB}_mask_mode")
                fields["inpainting_fill"] = gr.Radio(FILL_MODES, value=FILL_MODES[1], type="index",
                                                     label="Masked content", elem_id=f"{TAB}_inpainting_fill")
                with gr.Row():
                    fields["inpaint_full_res"] = gr.Radio(AREAS, value=AREAS[0], type="index", label="Inpaint area",
                                                          elem_id=f"{TAB}_inpaint_full_res")
                    fields["inpaint_full_res_padding"] = slider(0, 256, value=32, step=4, precision=0,
                                                                label="Only masked padding, pixels",
                                                                elem_id=f"{TAB}_inpaint_full_res_padding")
            fields.update(txt2img.create_refiner(services, TAB))
            fields.update(controlnet.create_panel(services, TAB, width, height, demo=demo, topbar=topbar).fields)
            script_controls = scripts_ui.create(services.scripts.img2img)
            fields["styles"] = top.styles
        output = create_output_panel(TAB)

    images_for_send = {"img2img": fields["init_img"], "sketch": fields["sketch"],
                       "inpaint": fields["init_img_with_mask"], "inpaint_sketch": fields["inpaint_color_sketch"],
                       "inpaint_upload": fields["init_img_inpaint"]}
    tab = Img2ImgTab(fields, mode_tabs, images_for_send, top.generate, top.interrupt, top.skip, output)

    # ------------------------------------------------------------- small helpers
    mode_tabs.change(None, js="() => img2imgShowModeControls()")
    swap.click(None, inputs=[width, height], outputs=[width, height], js="(w, h) => [h, w]")
    seed_row.connect(output)
    image_keys = list(IMAGE_KEYS)
    image_inputs = [fields[key] for key in image_keys] + [fields["mode"]]
    mode_js = ("(...args) => { args[args.length - 1] = img2imgSelectedTab(" + json.dumps(MODES)
               + ", 'img2img'); return args; }")

    def input_size(*values) -> tuple[int, int] | None:
        mode = values[-1]
        try:
            init, _ = init_and_mask(mode, dict(zip(image_keys, values)), "#ffffff")
        except InputError:
            return None
        return init.size

    def detect_size(*values):
        size = input_size(*values)
        if size is None:
            gr.Warning("Upload an image first.", title="Resize to")
            return gr.skip(), gr.skip()
        return size[0] // 8 * 8, size[1] // 8 * 8

    def preview_scale(scale, *values):
        size = input_size(*values)
        if size is None:
            return ""
        target = scaled_size(size, float(scale or 1))
        return (f"resize: from <span class='resolution'>{size[0]}x{size[1]}</span> to "
                f"<span class='resolution'>{target[0]}x{target[1]}</span>")

    detect.click(detect_size, inputs=image_inputs, outputs=[width, height], js=mode_js, show_progress="hidden",
                 api_visibility=PRIVATE)
    fields["scale_by"].change(preview_scale, inputs=[fields["scale_by"], *image_inputs], outputs=[scale_preview],
                              js=mode_js, trigger_mode="always_last", show_progress="hidden", api_visibility=PRIVATE)

    paste_fields = {name: component for name, component in fields.items() if name not in UI_KEYS}
    top.paste.click(txt2img.paste_handler(services, paste_fields, script_controls), inputs=[top.prompt],
                    outputs=list(dict.fromkeys([*paste_fields.values(), *script_controls.paste_targets()])),
                    show_progress="hidden", api_visibility=PRIVATE)

    # ------------------------------------------------------------- generation
    names = list(fields)
    background = str(options.img2img_background_color or "#ffffff")

    def submit(data: dict):
        request = txt2img.validated(services, data, LABELS)
        return Submission(lambda: services.submit_img2img(request))

    chooser = [script_controls.chooser] if script_controls.chooser is not None else []

    def submissions(*values):
        script_values = list(values[len(names) + len(chooser):])
        chosen = values[len(names)] if chooser else None
        values = dict(zip(names, values))
        try:
            data = request_data(values, background)
        except InputError as error:
            raise gr.Error(html.escape(str(error)), title="img2img", print_exception=False) from None
        data.update(script_controls.request_fields(script_values, chosen))
        if values.get("mode") != "batch":
            return [submit(data)]
        return batch_submissions(services, data, values, background)

    js = _MODE_JS.format(mode=names.index("mode"), resize=names.index("resize_tab"), modes=json.dumps(MODES))
    txt2img.connect_generation(services, top, output,
                               [fields[name] for name in names] + chooser + script_controls.components, submissions,
                               js=js)
    return tab


def batch_submissions(services, data: dict, values: dict, background: str):
    """One job per image of the input directory, queued one after the other as each finishes."""
    if getattr(services.args, "hide_ui_dir_config", False):
        raise gr.Error("Batch processing is disabled by the --hide-ui-dir-config flag.", title="img2img",
                       print_exception=False)
    try:
        files = batch_files((values.get("batch_input_dir") or "").strip())
    except InputError as error:
        raise gr.Error(html.escape(str(error)), title="img2img", print_exception=False) from None
    output_dir = (values.get("batch_output_dir") or "").strip()
    mask_dir = (values.get("batch_inpaint_mask_dir") or "").strip()
    info_dir = (values.get("batch_png_info_dir") or "").strip()
    props = list(values.get("batch_png_info_props") or []) if values.get("batch_use_png_info") else []
    if output_dir:   # saved there by us instead of into outputs/img2img-images
        data = {**data, "save_images": False, "save_grid": False}

    def save(result) -> None:
        first = result.index_of_first_image
        for image, text, seed in zip(result.images[first:], result.infotexts[first:], result.seeds):
            images.save_image(image, output_dir, seed=seed, infotext=text, save_to_dirs=False)

    def one(path: Path) -> Submission:
        def submit_file():
            try:
                image = images.load_image_file(path)
                mask_path = _mask_for(mask_dir, path) if mask_dir else None
                mask = images.load_image_file(mask_path) if mask_path else None
                text = None
                if props:
                    source = Path(info_dir).expanduser() / path.name if info_dir else path
                    text = images.read_info(images.load_image_file(source) if source != path else image)[0]
            except (OSError, ValueError) as error:
                raise gr.Error(html.escape(f"{path.name}: {error}"), print_exception=False) from None
            file_data = {**data, "init_images": [masking.flatten(image, background)], "mask": mask}
            if values.get("resize_tab") == "by":
                file_data["width"], file_data["height"] = scaled_size(image.size, float(values.get("scale_by") or 1))
            file_data = png_info_overrides(file_data, text, props, services.registry)
            return services.submit_img2img(txt2img.validated(services, file_data, LABELS))
        return Submission(submit_file, save if output_dir else None)

    return [one(path) for path in files]
