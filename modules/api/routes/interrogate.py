"""POST /sdapi/v1/interrogate (A1111's body `{image, model}` → `{caption}`): "clip" (a BLIP caption plus CLIP's
category matches) or "deepdanbooru" (tags), run as a job on the queue, whose worker owns the device."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from modules.api.callers import submitter
from modules.api.errors import validation_error
from modules.api.image_inputs import decode_image_field
from modules.api.job_waiting import finished
from modules.postprocess.interrogate.interrogator import MODELS
from modules.services import Services


class InterrogateRequest(BaseModel):
    image: str | None = Field(default="", title="Image", description="Image to work on, must be a Base64 string "
                              "containing the image's data.")
    model: str = Field(default="clip", title="Model", description="The interrogate model used: clip or "
                       "deepdanbooru.")


class InterrogateResponse(BaseModel):
    caption: str | None = Field(default=None, title="Caption", description="The generated caption for the image.")


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    @router.post("/interrogate", response_model=InterrogateResponse)
    async def interrogate(body: InterrogateRequest, http: Request):
        if not body.image:
            raise HTTPException(status_code=404, detail="Image not found")   # A1111's answer
        if body.model not in MODELS:
            raise validation_error(["model"], f"must be one of {', '.join(MODELS)}; got {body.model!r}")
        image = await run_in_threadpool(decode_image_field, body.image, ["image"], services.options)
        job = await finished(lambda job_id: services.submit_interrogate(image, body.model, job_id=job_id,
                                                                        by=submitter(http)),
                             error_name="InterrogateError")
        if isinstance(job, JSONResponse):
            return job
        return InterrogateResponse(caption=job.result)

    return router
