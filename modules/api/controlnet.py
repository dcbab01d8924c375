"""The sd-webui-controlnet extension's units as its clients send them, in `alwayson_scripts` (its /controlnet/*
routes are in routes/controlnet.py).

Clients written for the extension send units with its field names, legacy aliases and UI leftovers; this
module maps them onto `ControlNetUnit` (images decoded here, at the edge). Fields for features this project does
not have are accepted while unset and refused when set.
"""
from __future__ import annotations

from typing import Any

from modules import images

_ALIASES = {"input_image": "image", "lowvram": "low_vram", "guidance": "guidance_end"}
# The extension's UI, batch and add-on fields: harmless while unset, refused when a client relies on them.
_IGNORED_WHEN_UNSET = {
    "is_ui": None, "input_mode": ("simple", 0), "use_preview_as_input": None, "batch_image_dir": None,
    "batch_mask_dir": None, "batch_input_gallery": None, "batch_mask_gallery": None, "generated_image": None,
    "batch_images": None, "output_dir": None, "loopback": None, "inpaint_crop_input_image": "any",
    "union_control_type": ("Unknown",), "pulid_mode": ("Fidelity",), "animatediff_batch": None,
    "batch_modifiers": None, "batch_keyframe_idx": None, "advanced_weighting": None, "effective_region_mask": None,
    "ipadapter_input": None, "mask": None, "mask_image": None, "mask_image_fg": None, "image_fg": None,
}
UNSET = (None, False, "", [], {}, "None")


class ApiError(Exception):
    def __init__(self, loc: list, message: str):
        super().__init__(message)
        self.loc = loc


def decode_control_image(value: Any, loc: list):
    """A control image as the extension takes one (base64, {"image": ...}, or a list of one); None when unset."""
    if isinstance(value, dict):   # {"image": ..., "mask": ...}: the image; a mask is not supported
        if value.get("mask") not in UNSET:
            raise ApiError([*loc, "mask"], "a mask in the control image is not supported yet")
        value = value.get("image")
    if isinstance(value, list):   # a batch of control images: the extension's first one per generation
        if len(value) != 1:
            raise ApiError(loc, "give one control image per unit")
        return decode_control_image(value[0], [*loc, 0])
    if value in UNSET:
        return None
    if not isinstance(value, str):
        raise ApiError(loc, "expected a base64 image")
    try:
        return images.decode_base64_image(value)
    except ValueError as error:
        raise ApiError(loc, str(error)) from None


def unit_fields(raw: Any, loc: list) -> dict[str, Any]:
    """One unit as a client sends it → ControlNetUnit fields."""
    if not isinstance(raw, dict):
        raise ApiError(loc, "a ControlNet unit must be an object of its fields")
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _IGNORED_WHEN_UNSET:
            allowed = _IGNORED_WHEN_UNSET[key]
            if allowed != "any" and value not in UNSET and value not in (allowed or ()):
                raise ApiError([*loc, key], f"{key} is not supported yet")
            continue
        name = _ALIASES.get(key, key)
        if name == "image":
            value = decode_control_image(value, [*loc, key])
        fields[name] = value
    return fields


def alwayson_fields(scripts: dict[str, Any]) -> dict[str, Any]:
    """`alwayson_scripts` → GenerationRequest fields (script titles match case-insensitively, as in A1111)."""
    fields: dict[str, Any] = {}
    for title, value in scripts.items():
        loc = ["alwayson_scripts", title]
        if title.lower() != "controlnet":
            raise ApiError(loc, f"unknown always-on script {title!r}; available: ['controlnet']")
        args = value.get("args") if isinstance(value, dict) else None
        if not isinstance(args, list):
            raise ApiError(loc, 'expected {"args": [unit, ...]}')
        fields["controlnet_units"] = [unit_fields(unit, [*loc, "args", index]) for index, unit in enumerate(args)]
    return fields
