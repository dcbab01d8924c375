"""The ControlNet tab: the photo-first workflow. Drop a photo and see several annotations of it side by side
(each preprocessor run as a job on the worker; one whose annotator weights are missing says which file to add),
pick one, write a prompt, Generate, and see the photo and the result side by side.

It is a txt2img generation with one ControlNet unit, built from the same pieces as the txt2img tab (toprow,
seed_row, request_form, generate.connect_generation, the accordion's lists in ui/controlnet.py) and submitted
to the same queue; the ControlNet accordion of txt2img and img2img stays for several units and every option.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from modules.controlnet.preprocessors import INVERT, LINEART_STANDARD
from modules.controlnet.units import RESIZE_MODES, ControlNetUnit
from modules.diffusion import samplers
from modules.jobs import QueueFull
from modules.ui import controlnet, request_form
from modules.ui.common import PRIVATE, escape_multiline, slider, tool_button
from modules.ui.generate import Submission, connect_generation
from modules.ui.image_inputs import named_refusals
from modules.ui.output import OutputPanel, create_output_panel
from modules.ui.paste_button import paste_handler
from modules.ui.seed_row import create_seed_row
from modules.ui.toprow import create_toprow

TAB = "controlnet"
# Shown for a new photo: the usual annotations (those without weights work out of the box).
DEFAULT_ANNOTATIONS = ("canny", "softedge_hed", "depth_midas", "depth_anything", LINEART_STANDARD, "scribble_xdog",
                       "openpose_full", "mlsd")
ANNOTATION_SECONDS = 300   # the longest one annotation may wait for the worker (a generation may run first)
FIT_SIDE = 512             # a new photo sets the size to its shape, the longer side this long


@dataclass
class ControlNetTab:
    fields: dict[str, gr.components.Component]   # request field → component (the unit's fields under "unit_…")
    photo: gr.Image
    annotations: gr.Gallery
    chosen: gr.Radio
    missing: gr.HTML
    original: gr.Image
    result: gr.Image
    output: OutputPanel


def annotation_choices(services) -> list[str]:
    """Every preprocessor that makes an annotation of a photo (not "none" nor invert)."""
    return [name for name in services.controlnet.preprocessors.names() if name not in ("none", INVERT)]


def fitted_size(width: int, height: int, side: int = FIT_SIDE) -> tuple[int, int]:
    """The photo's shape at `side` pixels on its longer side, in multiples of 8."""
    scale = side / max(width, height, 1)
    return max(64, round(width * scale / 8) * 8), max(64, round(height * scale / 8) * 8)


def annotate(services, photo, names: list[str]) -> tuple[list[tuple], list[str]]:
    """Each preprocessor in `names` run on the photo as a job: ([(map, name)], [why one could not run])."""
    jobs, problems = [], []
    for name in names:
        unit = ControlNetUnit.model_validate({"enabled": False, "module": name},
                                             context={"controlnet": services.controlnet})
        try:
            jobs.append((name, services.submit_detect(unit, [photo])))
        except QueueFull as error:
            problems.append(f"{name}: {error}")
    maps = []
    for name, job in jobs:
        if not job.done.wait(ANNOTATION_SECONDS):
            problems.append(f"{name}: still waiting for the worker; try again")
        elif job.state == "done" and job.result:
            maps.append((job.result[0], name))
        else:
            problems.append((job.error or f"{name}: {job.state}").removeprefix("module: "))
    return maps, problems


def problems_html(problems: list[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{escape_multiline(problem)}</li>" for problem in problems)
    return f'<div class="message warning"><p>Not shown:</p><ul>{items}</ul></div>'


def model_for(services, module: str, current: str | None) -> str:
    """The ControlNet to use with a picked annotation: the current one if it fits the annotation's Control
    Type, else that type's default (the extension's choice), else the current one."""
    preprocessor = services.controlnet.preprocessors.find(module)
    types = controlnet.control_types(services)
    chosen = types.get(preprocessor.control_type if preprocessor else "", types[controlnet.ALL_TYPES])
    if current and current != controlnet.NO_MODEL and current in chosen["model_list"]:
        return current
    if chosen["default_model"] != controlnet.NO_MODEL:
        return chosen["default_model"]
    return current or controlnet.NO_MODEL


def create_tab(services, demo: gr.Blocks | None = None, topbar=None) -> ControlNetTab:
    top = create_toprow(services, TAB, demo, topbar, f"{TAB}_paste")
    with gr.Row(elem_id=f"{TAB}_extra_networks_and_results", equal_height=False):
        with gr.Column(elem_id=f"{TAB}_settings", scale=1, min_width=360):
            photo = named_refusals(gr.Image(type="pil", image_mode="RGB", sources=["upload", "clipboard"],
                                            label="Photo", elem_id=f"{TAB}_photo", height=300))
            names = gr.CheckboxGroup(annotation_choices(services), value=[
                name for name in DEFAULT_ANNOTATIONS if name in annotation_choices(services)],
                label="Annotations to show", elem_id=f"{TAB}_annotation_names")
            annotate_button = gr.Button("Annotate", elem_id=f"{TAB}_annotate")
            annotations = gr.Gallery(label="Annotations", elem_id=f"{TAB}_annotations", columns=4, height=260,
                                     format="png", object_fit="contain", interactive=False, allow_preview=False)
            missing = gr.HTML("", elem_id=f"{TAB}_annotations_missing", js_on_load=None)
            chosen = gr.Radio([], value=None, label="Use annotation", elem_id=f"{TAB}_annotation")
            with gr.Row(equal_height=True):
                model = gr.Dropdown(controlnet.model_choices(services), value=controlnet.NO_MODEL, label="Model",
                                    elem_id=f"{TAB}_model", filterable=True, scale=4)
                refresh = tool_button("🔄", f"{TAB}_refresh_models")
            weight = slider(0.0, 2.0, value=1.0, step=0.05, label="Control Weight", elem_id=f"{TAB}_weight")
            with gr.Row():
                sampler = gr.Dropdown(samplers.sampler_names(), value=samplers.sampler_names()[0],
                                      label="Sampling method", elem_id=f"{TAB}_sampling", filterable=True)
                steps = slider(1, 150, value=20, step=1, precision=0, label="Sampling steps", elem_id=f"{TAB}_steps")
            with gr.Row():
                width = slider(64, 2048, value=512, step=8, precision=0, label="Width", elem_id=f"{TAB}_width")
                height = slider(64, 2048, value=512, step=8, precision=0, label="Height", elem_id=f"{TAB}_height")
            cfg_scale = slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id=f"{TAB}_cfg_scale")
            seed_row = create_seed_row(TAB)
        with gr.Column(scale=1):
            with gr.Row(elem_id=f"{TAB}_compare", equal_height=True):
                original = gr.Image(None, label="Original", interactive=False, elem_id=f"{TAB}_compare_original",
                                    height=320, format="png")
                result = gr.Image(None, label="Result", interactive=False, elem_id=f"{TAB}_compare_result",
                                  height=320, format="png")
            output = create_output_panel(TAB, services)

    fields = {"prompt": top.prompt, "negative_prompt": top.negative, "sampler_name": sampler, "steps": steps,
              "width": width, "height": height, "cfg_scale": cfg_scale, **seed_row.fields, "styles": top.styles}
    tab = ControlNetTab(fields, photo, annotations, chosen, missing, original, result, output)
    quiet = {"show_progress": "hidden", "api_visibility": PRIVATE}
    seed_row.connect(output)
    top.paste.click(paste_handler(services, fields), inputs=[top.prompt], outputs=list(fields.values()), **quiet)

    def show_annotations(picture, wanted: list[str], current: str | None, current_model: str):
        if picture is None:
            return [], "", gr.update(choices=[], value=None), gr.update()
        maps, problems = annotate(services, picture, list(wanted or []))
        shown = [name for _, name in maps]
        pick = current if current in shown else (shown[0] if shown else None)
        return (maps, problems_html(problems), gr.update(choices=shown, value=pick),
                model_for(services, pick, current_model) if pick else gr.update())

    def new_photo(picture, wanted, current, current_model):
        size = fitted_size(*picture.size) if picture is not None else (gr.update(), gr.update())
        return (*show_annotations(picture, wanted, current, current_model), *size)

    annotated = [annotations, missing, chosen, model]
    photo.upload(new_photo, inputs=[photo, names, chosen, model], outputs=[*annotated, width, height],
                 show_progress="minimal", api_visibility=PRIVATE)
    photo.clear(lambda: ([], "", gr.update(choices=[], value=None)), outputs=[annotations, missing, chosen], **quiet)
    annotate_button.click(show_annotations, inputs=[photo, names, chosen, model], outputs=annotated,
                          show_progress="minimal", api_visibility=PRIVATE)

    def pick_from_gallery(shown: list[str] | None, current_model: str, evt: gr.SelectData):
        caption = evt.value.get("caption") if isinstance(evt.value, dict) else None
        if not caption:
            return gr.skip(), gr.skip()
        return caption, model_for(services, caption, current_model)

    annotations.select(pick_from_gallery, inputs=[chosen, model], outputs=[chosen, model], **quiet)
    chosen.input(lambda module, current_model: model_for(services, module, current_model) if module else gr.skip(),
                 inputs=[chosen, model], outputs=[model], **quiet)

    def refreshed(current: str):
        return controlnet.refreshed_models(services, current)

    refresh.click(refreshed, inputs=[model], outputs=[model], **quiet)
    if demo is not None:   # the list follows the loaded checkpoint's family, as the accordion's does
        demo.load(refreshed, inputs=[model], outputs=[model], **quiet)
    if topbar is not None:
        topbar.checkpoint.change(refreshed, inputs=[model], outputs=[model], **quiet)

    names_order = list(fields)

    def submissions(*values) -> list[Submission]:
        picture, module, control_model, control_weight = values[len(names_order):]
        if picture is None:
            raise gr.Error("Drop a photo first.", title="ControlNet", print_exception=False)
        if not module:
            raise gr.Error("Pick one of the annotations first.", title="ControlNet", print_exception=False)
        data = request_form.request_data(dict(zip(names_order, values[:len(names_order)])))
        data["controlnet_units"] = [{"enabled": True, "module": module, "model": control_model or controlnet.NO_MODEL,
                                     "weight": float(control_weight), "image": picture,
                                     "resize_mode": RESIZE_MODES[1]}]
        request = request_form.validated(services, data)
        return [Submission(lambda: services.submit_txt2img(request))]

    event = connect_generation(services, top, output, [*fields.values(), photo, chosen, model, weight], submissions)

    def side_by_side(picture, pictures, generation: dict):
        index = int((generation or {}).get("index_of_first_image") or 0)
        if picture is None or not pictures or index >= len(pictures):
            return gr.skip(), gr.skip()
        item = pictures[index]
        return picture, item[0] if isinstance(item, (tuple, list)) else item

    event.success(side_by_side, inputs=[photo, output.gallery, output.generation], outputs=[original, result],
                  **quiet)
    return tab
