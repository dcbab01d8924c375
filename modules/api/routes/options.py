"""The settings over the API: GET and POST /sdapi/v1/options (a new `sd_model_checkpoint` loads on the queue), and
GET /cmd-flags."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from modules.api.callers import submitter
from modules.api.errors import validation_error
from modules.api.job_waiting import finished
from modules.cmd_args import public_flags
from modules.services import Services


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    @router.get("/options")
    def get_options():
        values = services.options.as_dict()
        if services.args.hide_ui_dir_config:
            infos = services.options.infos()
            values = {k: v for k, v in values.items() if not (k in infos and infos[k].restrict_api)}
        return values

    @router.post("/options")
    async def set_options(request: Request):
        try:
            changes = await request.json()
        except (ValueError, RecursionError):   # not JSON, or nested deeper than the parser goes
            raise validation_error([], "the body must be a JSON object") from None
        if not isinstance(changes, dict):
            raise validation_error([], "the body must be a JSON object")
        checkpoint = changes.pop("sd_model_checkpoint", None)
        try:
            checked = services.validate_options(changes, from_api=True)
        except ValueError as error:
            key = str(error).split(":", 1)[0]
            raise validation_error([key], str(error).split(": ", 1)[-1]) from None
        if checkpoint is not None:
            if not isinstance(checkpoint, str) or services.registry.find(checkpoint) is None:
                raise validation_error(["sd_model_checkpoint"],
                                       f"unknown checkpoint {checkpoint!r}; see /sdapi/v1/sd-models")
            job = await finished(lambda job_id: services.submit_model_switch(checkpoint, by=submitter(request)),
                                 error_name="ModelLoadError")
            if isinstance(job, JSONResponse):
                return job
        services.update_options(checked, from_api=True)
        return {}

    @router.get("/cmd-flags")
    def cmd_flags():
        return public_flags(services.args)

    return router
