"""The ControlNet accordion of txt2img and img2img: one tab per unit, as the sd-webui-controlnet extension lays
it out (its elem_ids too), and the units' values → `controlnet_units` of the request.

A unit's components sit in the tab's `fields` under `controlnet_units.<unit>.<name>` keys, so that the tab's
request building, ↙️ paste and "Send to" find them like any other field.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr
from pydantic import ValidationError

from modules.controlnet.plan import ControlNetError
from modules.controlnet.preprocessors import named_control_type
from modules.controlnet.units import CONTROL_MODES, HIRES_OPTIONS, RESIZE_MODES, ControlNetUnit
from modules.ui import paste
from modules.ui.common import PRIVATE, number, slider, tool_button
from modules.ui.image_inputs import named_refusals

PREFIX = "controlnet_units."
ALL_TYPES = "All"
NO_MODEL = "None"
SLIDERS = ("processor_res", "threshold_a", "threshold_b")
# Unit fields of the request, in ControlNetUnit's names; the unit's other components are the UI's own.
REQUEST_FIELDS = ("enabled", "module", "model", "weight", "image", "resize_mode", "processor_res", "threshold_a",
                  "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode", "hr_option",
                  "low_vram")
# Request field → the label the user sees, to name a unit's field in validation messages.
LABELS = {"enabled": "Enable", "module": "Preprocessor", "model": "Model", "weight": "Control Weight",
          "image": "Image", "resize_mode": "Resize Mode", "processor_res": "Preprocessor Resolution",
          "threshold_a": "Threshold A", "threshold_b": "Threshold B", "guidance_start": "Starting Control Step",
          "guidance_end": "Ending Control Step", "pixel_perfect": "Pixel Perfect", "control_mode": "Control Mode",
          "hr_option": "Hires-Fix Option", "low_vram": "Low VRAM"}


def unit_key(index: int, name: str) -> str:
    return f"{PREFIX}{index}.{name}"


def unit_title(index: int) -> str:
    return f"ControlNet Unit {index}"


# ------------------------------------------------------------------ component values → request data

def take_units(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Removes every unit key from `values` and returns the units as ControlNetUnit data, one per unit in the
    panel's order (so that a validation error's index is the unit's tab). A disabled unit goes as just that,
    so nothing it holds can fail the request; in img2img a unit without "Upload independent control image"
    uses the img2img image (None)."""
    units: dict[int, dict[str, Any]] = {}
    for key in [key for key in values if key.startswith(PREFIX)]:
        index, _, name = key.removeprefix(PREFIX).partition(".")
        units.setdefault(int(index), {})[name] = values.pop(key)
    data = []
    for index in sorted(units):
        shown = units[index]
        if not shown.get("enabled"):
            data.append({"enabled": False})
            continue
        unit = {name: shown[name] for name in REQUEST_FIELDS if name in shown}
        unit["enabled"] = True
        unit["pixel_perfect"] = bool(unit.get("pixel_perfect"))
        unit["low_vram"] = bool(unit.get("low_vram"))
        unit["model"] = unit.get("model") or NO_MODEL
        if "processor_res" in unit:
            unit["processor_res"] = number(unit["processor_res"], int)
        for name in ("weight", "threshold_a", "threshold_b", "guidance_start", "guidance_end"):
            if name in unit:
                unit[name] = number(unit[name], float)
        if shown.get("independent") is False:
            unit["image"] = None
        data.append(unit)
    return data


def error_label(location: tuple, message: str) -> tuple[str, str]:
    """A validation error inside `controlnet_units` (its location after that name) → ("ControlNet Unit 0 ›
    Model", message). Errors of the whole unit name their field as "field: ..." in the message."""
    unit = unit_title(int(location[0])) if location and isinstance(location[0], int) else "ControlNet"
    if len(location) > 1:
        return f"{unit} › {LABELS.get(str(location[1]), location[1])}", message
    field, separator, rest = message.partition(": ")
    if separator and field in LABELS:
        return f"{unit} › {LABELS[field]}", rest
    return unit, message


# ------------------------------------------------------------------ what the lists offer

def current_family(services):
    """The loaded checkpoint's family (a models.families.Family); None (offer every ControlNet) before one is
    loaded."""
    model = services.models.current
    return model.family if model is not None else None


def refreshed_models(services, current: str):
    """The model dropdown after re-reading the ControlNet folder: the loaded checkpoint's family's models, and
    `current` kept even when it is another family's (the job then says why it cannot use it)."""
    services.controlnet.registry.refresh()
    return model_update(services, current)


def model_update(services, current: str):
    """The model dropdown for the loaded checkpoint's family, `current` kept."""
    choices = model_choices(services, keep=current)
    return gr.update(choices=choices, value=current if current in choices else NO_MODEL)


def model_choices(services, keep: str | None = None) -> list[str]:
    """"None" and the ControlNets of the loaded checkpoint's family; `keep`, a unit's pick, stays in the list
    even when it is for another family, so that Generate says what is wrong rather than the pick vanishing."""
    choices = [NO_MODEL, *services.controlnet.registry.titles(current_family(services))]
    if keep and keep not in choices and services.controlnet.registry.find(keep) is not None:
        choices.append(keep)
    return choices


def control_types(services) -> dict[str, dict]:
    return services.controlnet.preprocessors.control_types(model_choices(services)[1:])["control_types"]


def type_choices(types: dict[str, dict]) -> list[str]:
    """The Control Type radio: "All" and the types some preprocessor here belongs to (the extension's other
    types, such as IP-Adapter, have nothing to run here)."""
    return [name for name, info in types.items()
            if name == ALL_TYPES or any(module != "none" and "invert" not in module for module in info["module_list"])]


def slider_updates(preprocessor, pixel_perfect: bool, values: dict[str, float] | None = None) -> list[dict]:
    """Updates for the Preprocessor Resolution / Threshold A / Threshold B sliders of `preprocessor`: its labels,
    ranges and defaults (or `values`, kept within range); those it has not are hidden, and so is the
    resolution under Pixel Perfect (the target size decides it)."""
    specs = (None, None, None) if preprocessor is None else (
        preprocessor.resolution, preprocessor.threshold_a, preprocessor.threshold_b)
    updates = []
    for name, spec in zip(SLIDERS, specs):
        if spec is None:
            updates.append(gr.update(visible=False))
            continue
        value = (values or {}).get(name, spec.value)
        value = min(max(value, spec.minimum), spec.maximum)
        updates.append(gr.update(label=spec.label, minimum=spec.minimum, maximum=spec.maximum, step=spec.step,
                                 value=value, visible=not (name == "processor_res" and pixel_perfect)))
    return updates


def choose_type(services, control_type: str, pixel_perfect: bool) -> tuple:
    """Picking a Control Type: the Preprocessor and Model lists filtered to it, its default preprocessor and
    model chosen, and the sliders for that preprocessor."""
    types = control_types(services)
    chosen = types.get(control_type) or types[ALL_TYPES]
    # A model whose name says no type ("my_guide.safetensors") may be of any: offered under every type too.
    untyped = [title for title in types[ALL_TYPES]["model_list"]
               if title != NO_MODEL and title not in chosen["model_list"] and named_control_type(title) is None]
    return (gr.update(choices=chosen["module_list"], value=chosen["default_option"]),
            gr.update(choices=[*chosen["model_list"], *untyped], value=chosen["default_model"]),
            *slider_updates(services.controlnet.preprocessors.find(chosen["default_option"]), pixel_perfect))


def preview_map(services, index: int, image, module: str, resolution, threshold_a, threshold_b,
                pixel_perfect: bool, resize_mode: str, width, height):
    """💥: the unit's preprocessor run on its image for the tab's target size; a gr.Error says what is wrong."""
    title = unit_title(index)
    if image is None:
        raise gr.Error("Upload a control image first.", title=title, print_exception=False)
    try:
        control = ControlNetUnit.model_validate(
            {"enabled": False, "module": module, "processor_res": number(resolution, int),
             "threshold_a": number(threshold_a, float), "threshold_b": number(threshold_b, float),
             "pixel_perfect": bool(pixel_perfect), "resize_mode": resize_mode},
            context={"controlnet": services.controlnet})
        detected, _, _ = services.controlnet.detect(control, image, int(width), int(height))
    except ValidationError as error:
        message = "\n".join(": ".join(error_label((index, *item["loc"]), item["msg"].removeprefix("Value error, ")))
                            for item in error.errors(include_url=False, include_context=False, include_input=False))
        raise gr.Error(html.escape(message), title=title, print_exception=False) from None
    except ControlNetError as error:
        raise gr.Error(html.escape(str(error)), title=title, print_exception=False) from None
    return detected


# ------------------------------------------------------------------ the panel

@dataclass
class UnitControls:
    index: int
    fields: dict[str, gr.components.Component]   # request field or UI name → component
    preview: gr.Image
    preview_column: gr.Column
    allow_preview: gr.Checkbox
    run_preprocessor: gr.Button
    refresh_models: gr.Button


@dataclass
class ControlNetPanel:
    units: list[UnitControls]

    @property
    def fields(self) -> dict[str, gr.components.Component]:
        """Every unit's components under `controlnet_units.<unit>.<name>` keys, for the tab's `fields`."""
        return {unit_key(unit.index, name): component for unit in self.units for name, component in unit.fields.items()}


def _create_unit(services, tab: str, index: int, types: dict[str, dict]) -> UnitControls:
    prefix = f"{tab}_controlnet_ControlNet-{index}"
    img2img = tab == "img2img"
    preprocessors = services.controlnet.preprocessors
    default = preprocessors.find("none")
    fields: dict[str, gr.components.Component] = {}
    if img2img:
        fields["independent"] = gr.Checkbox(False, label="Upload independent control image",
                                            elem_id=f"{prefix}_controlnet_same_img2img_checkbox")
    with gr.Row(elem_classes=["cnet-image-row"], equal_height=True, visible=not img2img) as image_row:
        fields["image"] = named_refusals(gr.Image(type="pil", image_mode="RGB", sources=["upload", "clipboard"],
                                                  label="Control image", elem_id=f"{prefix}_input_image",
                                                  elem_classes=["cnet-image"], height=300),
                                         name=f"{unit_title(index)} › Control image")
        with gr.Column(visible=False, elem_classes=["cnet-generated-image-group"]) as preview_column:
            preview = gr.Image(None, label="Preprocessor Preview", interactive=False, height=300,
                               elem_id=f"{prefix}_generated_image", elem_classes=["cnet-image"], format="png")
    with gr.Row(elem_classes=["controlnet_main_options"]):
        fields["enabled"] = gr.Checkbox(False, label="Enable", elem_id=f"{prefix}_controlnet_enable_checkbox",
                                        elem_classes=["cnet-unit-enabled"], min_width=0)
        fields["low_vram"] = gr.Checkbox(False, label="Low VRAM", elem_id=f"{prefix}_controlnet_low_vram_checkbox",
                                         min_width=0)
        fields["pixel_perfect"] = gr.Checkbox(False, label="Pixel Perfect", min_width=0,
                                              elem_id=f"{prefix}_controlnet_pixel_perfect_checkbox")
        allow_preview = gr.Checkbox(False, label="Allow Preview", visible=not img2img, min_width=0,
                                    elem_id=f"{prefix}_controlnet_preprocessor_preview_checkbox")
    fields["control_type"] = gr.Radio(type_choices(types), value=ALL_TYPES, label="Control Type",
                                      elem_id=f"{prefix}_controlnet_type_filter_radio",
                                      elem_classes=["controlnet_control_type_filter_group"])
    with gr.Row(elem_classes=["controlnet_preprocessor_model", "controlnet_row"]):
        fields["module"] = gr.Dropdown(preprocessors.names(), value=default.name, label="Preprocessor",
                                       elem_id=f"{prefix}_controlnet_preprocessor_dropdown", filterable=True)
        run_preprocessor = tool_button("💥", f"{prefix}_controlnet_trigger_preprocessor", visible=not img2img)
        fields["model"] = gr.Dropdown(model_choices(services), value=NO_MODEL, label="Model", filterable=True,
                                      elem_id=f"{prefix}_controlnet_model_dropdown")
        refresh_models = tool_button("🔄", f"{prefix}_controlnet_refresh_models")
    with gr.Row(elem_classes=["controlnet_weight_steps", "controlnet_row"]):
        fields["weight"] = slider(0.0, 2.0, value=1.0, step=0.05, label="Control Weight",
                                  elem_id=f"{prefix}_controlnet_control_weight_slider")
        fields["guidance_start"] = slider(0.0, 1.0, value=0.0, step=0.01, label="Starting Control Step",
                                          elem_id=f"{prefix}_controlnet_start_control_step_slider")
        fields["guidance_end"] = slider(0.0, 1.0, value=1.0, step=0.01, label="Ending Control Step",
                                        elem_id=f"{prefix}_controlnet_ending_control_step_slider")
    with gr.Row(elem_classes=["controlnet_row", "controlnet-sliders"]):
        # Built hidden with placeholder ranges: each preprocessor sets its own labels, ranges and defaults.
        fields["processor_res"] = slider(64, 2048, value=512, step=1, label="Preprocessor Resolution",
                                         visible=False, elem_id=f"{prefix}_controlnet_preprocessor_resolution_slider")
        fields["threshold_a"] = slider(0, 255, value=0, step=1, label="Threshold A", visible=False,
                                       elem_id=f"{prefix}_controlnet_threshold_A_slider")
        fields["threshold_b"] = slider(0, 255, value=0, step=1, label="Threshold B", visible=False,
                                       elem_id=f"{prefix}_controlnet_threshold_B_slider")
    fields["control_mode"] = gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], label="Control Mode",
                                      elem_id=f"{prefix}_controlnet_control_mode_radio")
    fields["resize_mode"] = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[1], label="Resize Mode",
                                     elem_id=f"{prefix}_controlnet_resize_mode_radio")
    if not img2img:
        fields["hr_option"] = gr.Radio(list(HIRES_OPTIONS), value=HIRES_OPTIONS[0], label="Hires-Fix Option",
                                       elem_id=f"{prefix}_controlnet_hr_option_radio")
    unit = UnitControls(index, fields, preview, preview_column, allow_preview, run_preprocessor, refresh_models)
    if img2img:
        fields["independent"].change(
            lambda shown: (gr.update(visible=shown), gr.update(visible=shown, value=False), gr.update(visible=shown)),
            inputs=[fields["independent"]], outputs=[image_row, allow_preview, run_preprocessor], queue=False,
            show_progress="hidden", api_visibility=PRIVATE)
    return unit


def _connect_unit(services, unit: UnitControls, width: gr.Slider, height: gr.Slider) -> None:
    fields = unit.fields
    preprocessors = services.controlnet.preprocessors
    sliders = [fields[name] for name in SLIDERS]
    quiet = {"show_progress": "hidden", "api_visibility": PRIVATE}

    # `select`/`input` fire on the user's pick only: a paste sets these values and the sliders itself.
    fields["module"].select(lambda module, pixel_perfect: slider_updates(preprocessors.find(module), pixel_perfect),
                            inputs=[fields["module"], fields["pixel_perfect"]], outputs=sliders, queue=False, **quiet)

    fields["control_type"].input(lambda control_type, pixel_perfect: choose_type(services, control_type, pixel_perfect),
                                 inputs=[fields["control_type"], fields["pixel_perfect"]],
                                 outputs=[fields["module"], fields["model"], *sliders], **quiet)

    def resolution_shown(module: str, pixel_perfect: bool):
        preprocessor = preprocessors.find(module)
        return gr.update(visible=bool(preprocessor and preprocessor.resolution and not pixel_perfect))

    fields["pixel_perfect"].change(resolution_shown, inputs=[fields["module"], fields["pixel_perfect"]],
                                   outputs=[fields["processor_res"]], queue=False, **quiet)
    unit.allow_preview.change(lambda allowed: gr.update(visible=allowed), inputs=[unit.allow_preview],
                              outputs=[unit.preview_column], queue=False, **quiet)

    unit.refresh_models.click(lambda current: refreshed_models(services, current), inputs=[fields["model"]],
                              outputs=[fields["model"]], **quiet)

    def run(image, module, resolution, threshold_a, threshold_b, pixel_perfect, resize_mode, target_w, target_h):
        detected = preview_map(services, unit.index, image, module, resolution, threshold_a, threshold_b,
                               pixel_perfect, resize_mode, target_w, target_h)
        return detected, gr.update(visible=True), True

    unit.run_preprocessor.click(
        run, inputs=[fields["image"], fields["module"], *sliders, fields["pixel_perfect"], fields["resize_mode"],
                     width, height],
        outputs=[unit.preview, unit.preview_column, unit.allow_preview], **quiet)


def create_panel(services, tab: str, width: gr.Slider, height: gr.Slider, demo: gr.Blocks | None = None,
                 topbar=None) -> ControlNetPanel:
    """The accordion with `control_net_unit_count` unit tabs. `width`/`height` (the tab's target size) are for
    Pixel Perfect in the preview; with `demo` and `topbar` the Model lists follow the loaded checkpoint."""
    count = int(services.options.control_net_unit_count)
    types = control_types(services)
    units = []
    with gr.Accordion("ControlNet", open=False, elem_id=f"{tab}_controlnet", elem_classes=["controlnet"]):
        with gr.Tabs(elem_id=f"{tab}_controlnet_tabs"):
            for index in range(count):
                with gr.Tab(unit_title(index), id=f"{tab}_controlnet_unit_{index}",
                            elem_id=f"{tab}_controlnet_ControlNet-{index}_tab"):
                    units.append(_create_unit(services, tab, index, types))
    for unit in units:
        _connect_unit(services, unit, width, height)

    models = [unit.fields["model"] for unit in units]

    def for_family(*current):
        return [model_update(services, value) for value in current]

    # The page may be older than the loaded model, and a checkpoint switch changes which ControlNets fit.
    if demo is not None:
        demo.load(for_family, inputs=models, outputs=models, show_progress="hidden", api_visibility=PRIVATE)
    if topbar is not None:
        topbar.checkpoint.change(for_family, inputs=models, outputs=models, show_progress="hidden",
                                 api_visibility=PRIVATE)
    return ControlNetPanel(units)


# ------------------------------------------------------------------ ↙️ paste and "Send to"

def paste_updates(services, units: list[dict] | None, fields: dict, warnings: list[str], *,
                  untick_others: bool) -> dict:
    """Units parsed from infotext (`controlnet_units` of `infotext_to_request_fields`) → updates of the units'
    controls in `fields` (never their images): pasted unit N goes to tab N, ticked, with its preprocessor's
    sliders; `untick_others` unticks the tabs beyond them (a "Send to" of an image without them)."""
    if units is None:
        return {}
    updates: dict = {}
    index = 0
    while unit_key(index, "enabled") in fields:
        def component(name: str, index=index):
            return fields.get(unit_key(index, name))
        if index >= len(units):
            if untick_others:
                updates[component("enabled")] = False
            index += 1
            continue
        pasted = dict(units[index])
        title = unit_title(index)
        updates[component("enabled")] = True
        updates[component("control_type")] = ALL_TYPES   # lists unfiltered, so the pasted names are in them
        preprocessor = services.controlnet.preprocessors.find(str(pasted.get("module", "none")))
        if preprocessor is None:
            warnings.append(f"{title} › Preprocessor: {pasted.get('module')!r} is not available here")
        else:
            updates[component("module")] = gr.update(choices=services.controlnet.preprocessors.names(),
                                                     value=preprocessor.name)
            pixel_perfect = bool(pasted.get("pixel_perfect"))
            values = {name: pasted[name] for name in SLIDERS if isinstance(pasted.get(name), (int, float))}
            for name, update in zip(SLIDERS, slider_updates(preprocessor, pixel_perfect, values)):
                if component(name) is not None:
                    updates[component(name)] = update
        choices = model_choices(services)
        info = services.controlnet.registry.find(str(pasted.get("model", NO_MODEL)))
        if info is None or info.title not in choices:
            warnings.append(f"{title} › Model: {pasted.get('model')!r} is not available here"
                            + (" (it is for another kind of checkpoint)" if info is not None else ""))
        updates[component("model")] = gr.update(choices=choices, value=info.title if info and info.title in choices
                                                else NO_MODEL)
        for name in ("weight", "guidance_start", "guidance_end", "pixel_perfect", "control_mode", "resize_mode",
                     "hr_option"):
            if name in pasted and component(name) is not None:
                value = paste.component_value(f"{title} › {LABELS[name]}", component(name), pasted[name], warnings)
                if value is not None:
                    updates[component(name)] = value
        index += 1
    return updates
