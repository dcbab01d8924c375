"""A1111's `modules.api.api` names for extensions: `encode_pil_to_base64`, `decode_base64_to_image` and `Api`, whose
`text2imgapi` / `img2imgapi` run a generation as POST /sdapi/v1/txt2img and /img2img do (agent-scheduler queues
its tasks through them), synchronously, from the extension's own thread.

Constructing `Api(app, queue_lock)` adds no routes (the web UI already serves its own); `add_api_route` adds an
extension's route to the app it was given.
"""
from __future__ import annotations

import base64

from fastapi import FastAPI, HTTPException

from modules import images
from modules.addons import running
from modules.api import models
from modules.api.errors import status_of
from modules.api.generation import check_kept_overrides, keep_overrides, to_generation_request
from modules.api.image_inputs import decode_image_field
from modules.api.image_outputs import encode_image
from modules.jobs import JobIdInUse, QueueFull


def decode_base64_to_image(encoding: str):
    """An image from base64, a data: URI or (with the setting api_enable_requests) a public URL, with the API's
    limits; an HTTPException (422) naming what is wrong otherwise."""
    return decode_image_field(encoding, ["image"], running.services().options)


def encode_pil_to_base64(image) -> bytes:
    """A1111's: the image as base64 bytes in the samples_format setting's format (png, jpg or webp), its
    "parameters" metadata kept; a string is returned as it is."""
    if isinstance(image, str):
        return image
    options = running.services().options
    extension = str(getattr(options, "samples_format", "png") or "png")
    try:
        data = images.encode_as(image, extension, image.info.get("parameters"),
                                int(getattr(options, "jpeg_quality", images.JPEG_QUALITY)))
    except ValueError as error:
        raise HTTPException(status_code=500, detail=str(error)) from None
    return base64.b64encode(data)


class Api:
    def __init__(self, app: FastAPI, queue_lock=None, services=None):
        self.app = app
        self.queue_lock = queue_lock
        self.services = services or running.services()

    def add_api_route(self, path: str, endpoint, **kwargs) -> None:
        self.app.add_api_route(path, endpoint, **kwargs)

    def text2imgapi(self, txt2imgreq: models.Txt2ImgRequest) -> models.ImageResponse:
        return self._generated(txt2imgreq, self.services.submit_txt2img)

    def img2imgapi(self, img2imgreq: models.Img2ImgRequest) -> models.ImageResponse:
        return self._generated(img2imgreq, self.services.submit_img2img)

    def _generated(self, body, submit) -> models.ImageResponse:
        """The route's work, waiting on this thread: an HTTPException with the route's status when it fails."""
        services = self.services
        if services.queue.on_worker():
            raise RuntimeError("text2imgapi/img2imgapi called from inside a job would wait for itself: "
                               "call processing.process_images(p) there")
        request = to_generation_request(body, services)
        check_kept_overrides(body, services)
        try:
            job = submit(request, job_id=body.force_task_id)
        except QueueFull as error:
            raise HTTPException(status_code=429, detail=str(error)) from None
        except JobIdInUse as error:
            raise HTTPException(status_code=409, detail=f"force_task_id: {error}") from None
        job.done.wait()
        if job.state == "cancelled":
            raise HTTPException(status_code=409, detail="the job was interrupted before it started")
        if job.state == "failed":
            raise HTTPException(status_code=status_of(job.error_kind), detail=job.error)
        keep_overrides(body, services)
        result = job.result
        pictures = list(result.images) + result.detected_maps
        if isinstance(body, models.Img2ImgRequest) and body.include_init_images:
            pictures += list(request.init_images)
        parameters = body.model_dump()
        if isinstance(body, models.Img2ImgRequest) and not body.include_init_images:
            parameters.update(init_images=None, mask=None)
        return models.ImageResponse(images=[encode_image(picture) for picture in pictures] if body.send_images else [],
                                    parameters=parameters, info=result.info_json())
