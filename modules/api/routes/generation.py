"""POST /sdapi/v1/txt2img and /img2img: A1111's bodies become a GenerationRequest, run on the queue, and the
images come back with A1111's `parameters` and `info`."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from modules.api import models
from modules.api.callers import submitter
from modules.api.generation import check_kept_overrides, keep_overrides, to_generation_request
from modules.api.image_outputs import encode_images
from modules.api.job_waiting import finished
from modules.services import Services


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    async def generated(body: models.Txt2ImgRequest, http: Request, submit):
        """A txt2img/img2img request run on the queue: (its GenerationRequest, the finished job) or an error."""
        # in a thread: decoding (or fetching) images must not hold up other requests such as /progress
        request = await run_in_threadpool(to_generation_request, body, services)
        check_kept_overrides(body, services)
        job = await finished(lambda job_id: submit(request, job_id=job_id, by=submitter(http)), body.force_task_id)
        if not isinstance(job, JSONResponse):
            keep_overrides(body, services)
        return request, job

    @router.post("/txt2img", response_model=models.ImageResponse)
    async def txt2img(body: models.Txt2ImgRequest, http: Request):
        _, job = await generated(body, http, services.submit_txt2img)
        if isinstance(job, JSONResponse):
            return job
        result = job.result
        pictures = list(result.images) + result.detected_maps   # the ControlNet extension appends its maps
        encoded = await encode_images(pictures) if body.send_images else []
        return models.ImageResponse(images=encoded, parameters=body.model_dump(), info=result.info_json())

    @router.post("/img2img", response_model=models.ImageResponse)
    async def img2img(body: models.Img2ImgRequest, http: Request):
        request, job = await generated(body, http, services.submit_img2img)
        if isinstance(job, JSONResponse):
            return job
        result = job.result
        pictures = (list(result.images) + result.detected_maps
                    + (list(request.init_images) if body.include_init_images else []))
        encoded = await encode_images(pictures) if body.send_images else []
        parameters = body.model_dump()
        if not body.include_init_images:   # A1111 does not echo the (large) images back
            parameters.update(init_images=None, mask=None)
        return models.ImageResponse(images=encoded, parameters=parameters, info=result.info_json())

    return router
