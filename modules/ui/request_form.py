"""A tab's component values → a validated GenerationRequest: the conversions the components need (strict
types, the UI's "off" values) and validation errors shown with the labels the user sees."""
from __future__ import annotations

from typing import Any

import gradio as gr
from pydantic import ValidationError

from modules.generation.request import validate_request
from modules.ui import controlnet, override_settings
from modules.ui.common import escape_multiline, number

INT_FIELDS = ("steps", "width", "height", "batch_size", "n_iter", "seed", "subseed", "seed_resize_from_w",
              "seed_resize_from_h", "clip_skip", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y")
FLOAT_FIELDS = ("cfg_scale", "subseed_strength", "denoising_strength", "hr_scale", "refiner_switch_at")

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
    """Component values → the dict GenerationRequest validates (strict types: ints stay ints). The Hires
    sampler's "Use same sampler" is left to the validator, which reads it for the API too."""
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
    """`validate_request`, its error shown as a gr.Error naming each field by its label. The "Override settings"
    box's entries become the request's option overrides."""
    if "override_settings" in data:
        data = dict(data)
        data["option_overrides"] = {**data.get("option_overrides", {}), **override_settings.to_overrides(
            services.options, data.pop("override_settings"))}
    try:
        return validate_request(data, services.registry, services.networks, services.upscalers,
                                controlnet=services.controlnet, scripts=services.scripts)
    except ValidationError as error:
        raise gr.Error(escape_multiline(validation_message(error, labels)), title="Invalid settings",
                       print_exception=False) from None
