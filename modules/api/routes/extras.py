"""The Extras and PNG Info tabs over the API: POST /sdapi/v1/extra-single-image, /extra-batch-images (upscaling and
face restoration on the queue) and /png-info (the parameters stored in an image)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from modules import images
from modules.api import models
from modules.api.callers import submitter
from modules.api.errors import validation_error
from modules.api.generation import request_validation_error
from modules.api.image_inputs import decode_image_field
from modules.api.image_outputs import encode_images
from modules.api.job_waiting import finished
from modules.jobs import Job
from modules.output import infotext
from modules.services import Services


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    def extras_request(body: models.ExtrasOptions):
        from modules.postprocess.postprocessing import validate_extras

        data = body.model_dump(exclude={"image", "imageList"})
        data["save_images"] = False   # A1111's API returns the images without saving them
        try:
            return validate_extras(data, services.upscalers)
        except ValidationError as error:
            raise request_validation_error(error) from None

    async def run_extras(request, inputs, http: Request) -> Job | JSONResponse:
        return await finished(lambda job_id: services.submit_extras(request, inputs, job_id=job_id,
                                                                    by=submitter(http)))

    @router.post("/extra-single-image", response_model=models.ExtrasSingleImageResponse)
    async def extra_single_image(body: models.ExtrasSingleImageRequest, http: Request):
        request = extras_request(body)
        if not body.image:
            raise validation_error(["image"], "an image is required (base64 or data URI)")
        image = await run_in_threadpool(decode_image_field, body.image, ["image"], services.options)
        job = await run_extras(request, [(image, "")], http)
        if isinstance(job, JSONResponse):
            return job
        result = job.result
        image = result.images[0] if result.images else None
        encoded = await encode_images([image] if image is not None else [])
        return models.ExtrasSingleImageResponse(html_info=result.html_info, image=encoded[0] if encoded else None)

    @router.post("/extra-batch-images", response_model=models.ExtrasBatchImagesResponse)
    async def extra_batch_images(body: models.ExtrasBatchImagesRequest, http: Request):
        request = extras_request(body)
        inputs = [(await run_in_threadpool(decode_image_field, item.data, ["imageList", index, "data"],
                                           services.options), item.name)
                  for index, item in enumerate(body.imageList)]
        job = await run_extras(request, inputs, http)
        if isinstance(job, JSONResponse):
            return job
        result = job.result
        return models.ExtrasBatchImagesResponse(html_info=result.html_info,
                                                images=await encode_images(result.images))

    @router.post("/png-info", response_model=models.PngInfoResponse)
    def png_info(body: models.PngInfoRequest):
        image = decode_image_field(body.image, ["image"], services.options)   # a sync route: in a thread already
        try:
            text, items = images.read_info(image)
        except ValueError as error:
            raise validation_error(["image"], str(error)) from None
        parameters = infotext.parse_infotext(text) if text else {}
        if text:
            items = {"parameters": text, **items}
        return models.PngInfoResponse(info=text or "", items=items, parameters=parameters)

    return router
