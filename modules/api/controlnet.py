"""The sd-webui-controlnet extension's API: its units in `alwayson_scripts`, and its /controlnet/* routes.

Clients written for the extension send units with its field names, legacy aliases and UI leftovers; this
module maps them onto `ControlNetUnit` (images decoded here, at the edge) and answers its routes in its
shapes. Fields for features this project does not have are accepted while unset and refused when set.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modules import images
from modules.controlnet.units import ControlNetUnit
from modules.jobs import QueueFull
from modules.services import Services

API_VERSION = 2   # what the extension's GET /controlnet/version answers; clients branch on it

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
_UNSET = (None, False, "", [], {}, "None")


class ApiError(Exception):
    def __init__(self, loc: list, message: str):
        super().__init__(message)
        self.loc = loc


def _decode(value: Any, loc: list):
    if isinstance(value, dict):   # {"image": ..., "mask": ...}: the image; a mask is not supported
        if value.get("mask") not in _UNSET:
            raise ApiError([*loc, "mask"], "a mask in the control image is not supported yet")
        value = value.get("image")
    if isinstance(value, list):   # a batch of control images: the extension's first one per generation
        if len(value) != 1:
            raise ApiError(loc, "give one control image per unit")
        return _decode(value[0], [*loc, 0])
    if value in _UNSET:
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
            if allowed != "any" and value not in _UNSET and value not in (allowed or ()):
                raise ApiError([*loc, key], f"{key} is not supported yet")
            continue
        name = _ALIASES.get(key, key)
        if name == "image":
            value = _decode(value, [*loc, key])
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


class DetectRequest(BaseModel):
    """The extension's POST /controlnet/detect body."""

    model_config = ConfigDict(extra="forbid")

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list, max_length=16)
    controlnet_masks: list[str] = Field(default_factory=list)
    controlnet_processor_res: int = Field(512, ge=64, le=4096)
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    low_vram: bool = False


def _error(error: ApiError) -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": ["body", *error.loc], "msg": str(error),
                                                   "type": "value_error"}])


def create_router(services: Services, wait_for, encode_image, dependencies) -> APIRouter:
    """The extension registered these on the app itself, outside /sdapi/v1; they share its auth here."""
    router = APIRouter(prefix="/controlnet", dependencies=dependencies)
    controlnet = services.controlnet

    @router.get("/version")
    def version():
        return {"version": API_VERSION}

    @router.get("/model_list")
    def model_list(update: bool = True):
        if update:
            controlnet.registry.refresh()
        return {"model_list": controlnet.registry.titles()}

    @router.get("/module_list")
    def module_list(alias_names: bool = False):
        # The extension lists its internal names ("depth", "hed", "invert") unless alias_names asks for the UI's.
        preprocessors = [controlnet.preprocessors.find(name) for name in controlnet.preprocessors.names()]
        names = [p.aliases[0] if p.aliases and not alias_names else p.name for p in preprocessors]
        return {"module_list": names,
                "module_detail": {name: controlnet.preprocessors.module_detail(name) for name in names}}

    @router.get("/control_types")
    def control_types():
        return controlnet.preprocessors.control_types(controlnet.registry.titles())

    @router.get("/settings")
    def settings():
        return {"control_net_unit_count": int(services.options.control_net_unit_count)}

    @router.post("/detect")
    async def detect(body: DetectRequest):
        if not body.controlnet_input_images:
            raise _error(ApiError(["controlnet_input_images"], "give at least one image"))
        if any(mask not in _UNSET for mask in body.controlnet_masks):
            raise _error(ApiError(["controlnet_masks"], "masks are not supported yet"))
        try:
            pictures = [_decode(value, ["controlnet_input_images", index])
                        for index, value in enumerate(body.controlnet_input_images)]
            if any(picture is None for picture in pictures):
                raise ApiError(["controlnet_input_images"], "an image is empty")
            unit = ControlNetUnit(enabled=False, module=body.controlnet_module,
                                  processor_res=body.controlnet_processor_res,
                                  threshold_a=body.controlnet_threshold_a, threshold_b=body.controlnet_threshold_b)
        except ApiError as error:
            raise _error(error) from None
        except ValidationError as error:   # e.g. an infinite threshold; the context may hold exceptions (not JSON)
            raise HTTPException(status_code=422, detail=error.errors(include_url=False, include_context=False,
                                                                     include_input=False)) from None
        if controlnet.preprocessors.find(unit.module) is None:
            raise _error(ApiError(["controlnet_module"], f"unknown preprocessor {unit.module!r}; "
                                                        "see /controlnet/module_list"))
        try:
            job = services.submit_detect(unit, pictures)
        except QueueFull as error:
            raise HTTPException(status_code=429, detail=str(error)) from None
        await wait_for(job)
        if job.state == "failed":
            raise HTTPException(status_code=job.error_status, detail=job.error)
        if job.result is None:
            raise HTTPException(status_code=409, detail="the detection was interrupted")
        return {"images": [encode_image(picture) for picture in job.result], "info": "Success"}

    return router

