"""The img2img tab (A1111 layout): mode sub-tabs (img2img, sketch, inpaint, inpaint sketch, inpaint upload,
batch) → init image and mask → GenerationRequest → job → gallery. Shares its top row, seed row, refiner and
generate loop with txt2img; what its inputs become is in img2img_inputs, its Batch sub-tab in img2img_batch."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass

import gradio as gr

from modules import masking
from modules.diffusion import samplers
from modules.ui import controlnet, img2img_batch, override_settings, progress, request_form
from modules.ui import scripts as scripts_ui
from modules.ui.accordions import create_refiner
from modules.ui.common import PRIVATE, slider, tool_button
from modules.ui.generate import Submission, connect_generation
from modules.ui.image_inputs import named_refusals
from modules.ui.img2img_inputs import (IMAGE_KEYS, LABELS, UI_KEYS, InputError, image_of, init_and_mask, request_data,
                                       scaled_size)
from modules.ui.output import OutputPanel, create_output_panel
from modules.ui.paste_button import paste_handler
from modules.ui.seed_row import create_seed_row
from modules.ui.toprow import Toprow, create_toprow

TAB = "img2img"
# Sub-tab id → the elem_id of its panel (A1111's), which script.js uses to tell which one is shown.
MODES = {"img2img": "img2img_img2img_tab", "sketch": "img2img_img2img_sketch_tab",
         "inpaint": "img2img_inpaint_tab", "inpaint_sketch": "img2img_inpaint_sketch_tab",
         "inpaint_upload": "img2img_inpaint_upload_tab", "batch": "img2img_batch_tab"}
MASK_MODES = ["Inpaint masked", "Inpaint not masked"]
FILL_MODES = ["fill", "original", "latent noise", "latent nothing"]
AREAS = ["Whole picture", "Only masked"]


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


# script.js reads which mode sub-tab and which resize tab are shown (as A1111's submit_img2img does): a tab
# switched by "Send to" fires no select event, so the page is the only place that knows.
_MODE_JS = """(...args) => {{ args[{mode}] = img2imgSelectedTab({modes}, 'img2img');
  args[{resize}] = img2imgSelectedTab({{to: 'img2img_tab_resize_to', by: 'img2img_tab_resize_by'}}, 'to');
  return args; }}"""


def create_tab(services, demo: gr.Blocks | None = None, topbar=None) -> Img2ImgTab:
    """The tab; `demo` (to refresh the styles on page load) and `topbar` (for checkpoint cards) are optional."""
    top = create_toprow(services, TAB, demo, topbar, f"{TAB}_paste", interrogate=True)
    fields: dict[str, gr.components.Component] = {"prompt": top.prompt, "negative_prompt": top.negative}

    # The order of `fields` is the order of the Generate inputs, which _MODE_JS counts on.
    with gr.Row(elem_id=f"{TAB}_extra_networks_and_results", equal_height=False):
        with gr.Column(elem_id=f"{TAB}_settings", scale=1, min_width=360):
            mode_tabs, inputs = _create_mode_tabs(services)
            fields.update(inputs)
            # Filled in by script.js when Generate is pressed (see _MODE_JS).
            fields["mode"] = gr.Textbox("img2img", visible="hidden", elem_id=f"{TAB}_selected_mode")
            fields["resize_tab"] = gr.Textbox("to", visible="hidden", elem_id=f"{TAB}_selected_resize_tab")

            fields["resize_mode"] = gr.Radio(list(masking.RESIZE_MODES), value=masking.RESIZE_MODES[0], type="index",
                                             label="Resize mode", elem_id="resize_mode")
            fields.update(_create_sampling())
            size = _create_size()
            fields.update(size.fields)
            fields["cfg_scale"] = slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id=f"{TAB}_cfg_scale")
            fields["denoising_strength"] = slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                                  elem_id=f"{TAB}_denoising_strength")
            seed_row = create_seed_row(TAB)
            fields.update(seed_row.fields)
            with gr.Row(elem_id=f"{TAB}_other_settings"):
                fields["tiling"] = gr.Checkbox(False, label="Tiling", elem_id=f"{TAB}_tiling", scale=0, min_width=100)
                fields["clip_skip"] = slider(1, 12, value=int(services.options.CLIP_stop_at_last_layers), step=1,
                                             precision=0, label="Clip skip", elem_id=f"{TAB}_clip_skip", scale=3)
            fields.update(_create_inpaint_controls())
            fields.update(create_refiner(services, TAB))
            fields["override_settings"] = override_settings.create(TAB)
            fields.update(controlnet.create_panel(services, TAB, fields["width"], fields["height"], demo=demo,
                                                  topbar=topbar).fields)
            script_controls = scripts_ui.create(services.scripts.img2img)
            fields["styles"] = top.styles
        output = create_output_panel(TAB, services)

    images_for_send = {"img2img": fields["init_img"], "sketch": fields["sketch"],
                       "inpaint": fields["init_img_with_mask"], "inpaint_sketch": fields["inpaint_color_sketch"],
                       "inpaint_upload": fields["init_img_inpaint"]}
    tab = Img2ImgTab(fields, mode_tabs, images_for_send, top.generate, top.interrupt, top.skip, output)

    mode_tabs.change(None, js="() => img2imgShowModeControls()")
    width, height = fields["width"], fields["height"]
    size.swap.click(None, inputs=[width, height], outputs=[width, height], js="(w, h) => [h, w]")
    seed_row.connect(output)
    _connect_input_size_tools(fields, size)
    _connect_interrogate(services, top, fields)
    paste_fields = {name: component for name, component in fields.items() if name not in UI_KEYS}
    top.paste.click(paste_handler(services, paste_fields, script_controls), inputs=[top.prompt],
                    outputs=list(dict.fromkeys([*paste_fields.values(), *script_controls.paste_targets()])),
                    show_progress="hidden", api_visibility=PRIVATE)
    _connect_generate(services, top, output, fields, script_controls)
    return tab


def _create_mode_tabs(services) -> tuple[gr.Tabs, dict[str, gr.components.Component]]:
    """The mode sub-tabs and their image inputs (UI-only keys, see IMAGE_KEYS) and batch controls."""
    inputs: dict[str, gr.components.Component] = {}
    with gr.Tabs(elem_id="mode_img2img") as mode_tabs:
        with gr.Tab("img2img", id="img2img", elem_id=MODES["img2img"]):
            inputs["init_img"] = _image("img2img_image", "Image for img2img")
        with gr.Tab("Sketch", id="sketch", elem_id=MODES["sketch"]):
            inputs["sketch"] = _editor("img2img_sketch", gr.Brush(color_mode="defaults"))
        with gr.Tab("Inpaint", id="inpaint", elem_id=MODES["inpaint"]):
            inputs["init_img_with_mask"] = _editor("img2maskimg", gr.Brush(colors=["#ffffff"], color_mode="fixed"))
        with gr.Tab("Inpaint sketch", id="inpaint_sketch", elem_id=MODES["inpaint_sketch"]):
            inputs["inpaint_color_sketch"] = _editor("inpaint_sketch", gr.Brush(color_mode="defaults"))
        with gr.Tab("Inpaint upload", id="inpaint_upload", elem_id=MODES["inpaint_upload"]):
            inputs["init_img_inpaint"] = _image("img_inpaint_base", "Image for img2img")
            inputs["init_mask_inpaint"] = _image("img_inpaint_mask", "Mask")
        with gr.Tab("Batch", id="batch", elem_id=MODES["batch"]):
            inputs.update(img2img_batch.create_controls(services))
    return mode_tabs, inputs


def _create_sampling() -> dict[str, gr.components.Component]:
    with gr.Row(elem_id=f"sampler_selection_{TAB}"):
        sampler = gr.Dropdown(samplers.sampler_names(), value=samplers.sampler_names()[0], label="Sampling method",
                              elem_id=f"{TAB}_sampling", filterable=True)
        scheduler = gr.Dropdown(samplers.schedule_labels(), value=samplers.AUTOMATIC, label="Schedule type",
                                elem_id=f"{TAB}_scheduler")
    steps = slider(1, 150, value=20, step=1, precision=0, label="Sampling steps", elem_id=f"{TAB}_steps")
    return {"sampler_name": sampler, "scheduler": scheduler, "steps": steps}


@dataclass
class _SizeControls:
    fields: dict[str, gr.components.Component]   # scale_by, n_iter, batch_size, width, height
    swap: gr.Button
    detect: gr.Button
    scale_preview: gr.HTML


def _create_size() -> _SizeControls:
    """"Resize to" (width and height, ⇅, 📐 from the input image) or "Resize by", beside batch count and size."""
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
                    scale_by = slider(0.05, 4.0, value=1.0, step=0.05, label="Scale", elem_id=f"{TAB}_scale")
                    scale_preview = gr.HTML("", elem_id=f"{TAB}_scale_resolution_preview", js_on_load=None)
        with gr.Column(elem_id=f"{TAB}_column_batch", scale=2, min_width=120):
            n_iter = slider(1, 100, value=1, step=1, precision=0, label="Batch count", elem_id=f"{TAB}_batch_count")
            batch_size = slider(1, 8, value=1, step=1, precision=0, label="Batch size", elem_id=f"{TAB}_batch_size")
    fields = {"scale_by": scale_by, "n_iter": n_iter, "batch_size": batch_size, "width": width, "height": height}
    return _SizeControls(fields, swap, detect, scale_preview)


def _create_inpaint_controls() -> dict[str, gr.components.Component]:
    """Mask blur, transparency and mode, masked content, inpaint area (script.js shows them for inpaint modes)."""
    fields: dict[str, gr.components.Component] = {}
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
    return fields


# The last input (the mode box) gets the selected sub-tab, read in the page when the button is pressed.
_MODE_AS_LAST_JS = ("(...args) => { args[args.length - 1] = img2imgSelectedTab(" + json.dumps(MODES)
           + ", 'img2img'); return args; }")


def _connect_interrogate(services, top: Toprow, fields: dict[str, gr.components.Component]) -> None:
    """📎 / 📦: the selected sub-tab's picture → a BLIP caption with CLIP's matches, or DeepBooru tags, as the
    prompt (A1111's Interrogate buttons)."""
    image_keys = list(IMAGE_KEYS)

    def connect(model: str, button: gr.Button) -> None:
        async def interrogate(*values):
            try:
                image = image_of(values[-1], dict(zip(image_keys, values)))
            except InputError as error:
                gr.Warning(html.escape(str(error)), title="Interrogate")
                return gr.skip()
            job = services.submit_interrogate(image, model)
            async for _ in progress.watch(job, services.queue):
                pass
            if job.state != "done":
                gr.Warning(html.escape(job.error or "interrupted"), title="Interrogate", duration=15)
                return gr.skip()
            return job.result

        button.click(interrogate, inputs=[fields[key] for key in image_keys] + [fields["mode"]],
                     outputs=[top.prompt], js=_MODE_AS_LAST_JS, api_visibility=PRIVATE)

    for model, button in top.interrogate.items():
        connect(model, button)


def _connect_input_size_tools(fields: dict[str, gr.components.Component], size: _SizeControls) -> None:
    """📐 takes the input image's size, "Resize by" previews the size it makes."""
    image_keys = list(IMAGE_KEYS)
    image_inputs = [fields[key] for key in image_keys] + [fields["mode"]]

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

    size.detect.click(detect_size, inputs=image_inputs, outputs=[fields["width"], fields["height"]],
                      js=_MODE_AS_LAST_JS, show_progress="hidden", api_visibility=PRIVATE)
    fields["scale_by"].change(preview_scale, inputs=[fields["scale_by"], *image_inputs], outputs=[size.scale_preview],
                              js=_MODE_AS_LAST_JS, trigger_mode="always_last", show_progress="hidden",
                              api_visibility=PRIVATE)


def _connect_generate(services, top: Toprow, output: OutputPanel, fields: dict[str, gr.components.Component],
                      script_controls) -> None:
    """Generate: one job for the selected mode, or one per image of the batch directory."""
    names = list(fields)
    background = str(services.options.img2img_background_color or "#ffffff")

    def submit(data: dict):
        request = request_form.validated(services, data, LABELS)
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
        return img2img_batch.submissions(services, data, values, background)

    js = _MODE_JS.format(mode=names.index("mode"), resize=names.index("resize_tab"), modes=json.dumps(MODES))
    connect_generation(services, top, output, [fields[name] for name in names] + chooser + script_controls.components,
                       submissions, js=js)
