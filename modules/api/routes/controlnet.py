"""The sd-webui-controlnet extension's own routes: GET /controlnet/version, /model_list, /module_list,
/control_types and /settings, and POST /controlnet/detect (a preprocessor run on the queue), in its shapes.
The extension registered them on the app itself, outside /sdapi/v1; they share its auth here."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modules.api.callers import submitter
from modules.api.controlnet import UNSET, ApiError, decode_control_image
from modules.api.errors import status_of, validation_error
from modules.api.image_outputs import encode_images
from modules.api.job_waiting import wait_for
from modules.controlnet.units import ControlNetUnit
from modules.jobs import QueueFull
from modules.services import Services

API_VERSION = 2   # what the extension's GET /controlnet/version answers; clients branch on it


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


def create_router(services: Services) -> APIRouter:
    router = APIRouter()
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
    async def detect(body: DetectRequest, http: Request):
        if not body.controlnet_input_images:
            raise validation_error(["controlnet_input_images"], "give at least one image")
        if any(mask not in UNSET for mask in body.controlnet_masks):
            raise validation_error(["controlnet_masks"], "masks are not supported yet")
        try:
            pictures = [decode_control_image(value, ["controlnet_input_images", index])
                        for index, value in enumerate(body.controlnet_input_images)]
            if any(picture is None for picture in pictures):
                raise ApiError(["controlnet_input_images"], "an image is empty")
            unit = ControlNetUnit(enabled=False, module=body.controlnet_module,
                                  processor_res=body.controlnet_processor_res,
                                  threshold_a=body.controlnet_threshold_a, threshold_b=body.controlnet_threshold_b)
        except ApiError as error:
            raise validation_error(error.loc, str(error)) from None
        except ValidationError as error:   # e.g. an infinite threshold; the context may hold exceptions (not JSON)
            raise HTTPException(status_code=422, detail=error.errors(include_url=False, include_context=False,
                                                                     include_input=False)) from None
        if controlnet.preprocessors.find(unit.module) is None:
            raise validation_error(["controlnet_module"],
                                   f"unknown preprocessor {unit.module!r}; see /controlnet/module_list")
        try:
            job = services.submit_detect(unit, pictures, by=submitter(http))
        except QueueFull as error:
            raise HTTPException(status_code=429, detail=str(error)) from None
        await wait_for(job)
        if job.state == "failed":
            raise HTTPException(status_code=status_of(job.error_kind), detail=job.error)
        if job.result is None:
            raise HTTPException(status_code=409, detail="the detection was interrupted")
        return {"images": await encode_images(job.result), "info": "Success"}

    return router
