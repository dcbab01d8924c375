"""The /sdapi/v1 routes: thin adapters from A1111's request shapes to the backend and back.

Every route is registered on one router that carries the `--api-auth` dependency, so auth covers all
of them (A1111's plain `@app` routes escaped it).
"""
from __future__ import annotations

import asyncio
import base64
import io
import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import ValidationError

from modules import images, infotext, samplers
from modules.api import controlnet as controlnet_api, models
from modules.cmd_args import public_flags
from modules.jobs import Job, QueueFull
from modules.options import OPTIONS
from modules.processing import GenerationRequest, validate_request
from modules.services import Services

# Request fields this version cannot honour yet: asking for them is a clear 422, not a silent no-op.
NOT_YET_SUPPORTED = {
    "restore_faces": "face restoration during generation is not available; use /sdapi/v1/extra-single-image",
    "firstpass_image": "starting hires fix from a given first-pass image is not available",
    "latent_mask": "a separate latent mask is not available; send the mask in `mask`",
}
# Values of those fields that mean "not used".
UNSET = (None, False, "", [], {}, "None", "Use same checkpoint")
# override_settings keys that map onto request fields.
OVERRIDE_FIELDS = {"sd_model_checkpoint": "checkpoint", "CLIP_stop_at_last_layers": "clip_skip", "sd_vae": "vae"}
# Where a GenerationRequest field came from in the A1111 request, to name it in errors.
FIELD_LOCATIONS = {"checkpoint": ["override_settings", "sd_model_checkpoint"],
                   "clip_skip": ["override_settings", "CLIP_stop_at_last_layers"],
                   "vae": ["override_settings", "sd_vae"],
                   "controlnet_units": ["alwayson_scripts", "controlnet", "args"]}


def validation_error(loc: list, message: str, kind: str = "value_error") -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": ["body", *loc], "msg": message, "type": kind}])


def _wanted(value: Any) -> bool:
    return value not in UNSET


def _decode_image(value: str, loc: list):
    try:
        return images.decode_base64_image(value)
    except ValueError as error:
        raise validation_error(loc, str(error)) from None


def _image_fields(body: models.Img2ImgRequest, services: Services) -> dict[str, Any]:
    """img2img's own fields, images decoded (base64 or data URIs; URLs are refused)."""
    if not body.init_images:
        raise validation_error(["init_images"], "img2img needs at least one init image (base64 or data URI)")
    if len(body.init_images) > 64:
        raise validation_error(["init_images"], "at most 64 init images")
    if body.initial_noise_multiplier not in (None, 1.0):
        raise validation_error(["initial_noise_multiplier"], "only 1.0 (no extra noise) is supported",
                               "not_supported")
    fields: dict[str, Any] = {
        "init_images": [_decode_image(value, ["init_images", index]) for index, value in enumerate(body.init_images)],
        "mask": _decode_image(body.mask, ["mask"]) if body.mask else None,
        "resize_mode": body.resize_mode,
        "mask_blur": body.mask_blur if body.mask_blur is not None else body.mask_blur_x,
        "inpainting_fill": body.inpainting_fill, "inpaint_full_res": bool(body.inpaint_full_res),
        "inpaint_full_res_padding": body.inpaint_full_res_padding,
        "inpainting_mask_invert": body.inpainting_mask_invert,
    }
    return fields


def _hires_fields(body: models.Txt2ImgRequest) -> dict[str, Any]:
    fields = {name: getattr(body, name) for name in (
        "enable_hr", "hr_scale", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_sampler_name",
        "hr_scheduler", "hr_prompt", "hr_negative_prompt")}
    fields["hr_upscaler"] = body.hr_upscaler or "Latent"
    if _wanted(body.hr_checkpoint_name):
        raise validation_error(["hr_checkpoint_name"], "a separate hires checkpoint is not available; use the "
                               "refiner", "not_supported")
    return fields


def _script_fields(body, services: Services, image_mode: bool) -> dict[str, Any]:
    from modules import img2img_scripts

    if not _wanted(body.script_name):
        return {}
    name = img2img_scripts.find(body.script_name)
    if name is None or not image_mode:
        choices = list(img2img_scripts.SCRIPTS) if image_mode else []
        raise validation_error(["script_name"], f"unknown script {body.script_name!r}; available: {choices}")
    try:
        named = img2img_scripts.positional_args(name, list(body.script_args or []), services.upscalers.names())
        img2img_scripts.check_args(name, named, services.upscalers)
    except ValueError as error:
        raise validation_error(["script_args"], str(error)) from None
    return {"script_name": name, "script_args": named}


def to_generation_request(body: models.Txt2ImgRequest, services: Services) -> GenerationRequest:
    image_mode = isinstance(body, models.Img2ImgRequest)
    for name, reason in NOT_YET_SUPPORTED.items():
        if hasattr(body, name) and _wanted(getattr(body, name)):
            raise validation_error([name], reason, "not_supported")
    data: dict[str, Any] = {}
    if body.infotext:
        # A1111's Api.apply_infotext: fill fields the client did not set from pasted infotext.
        parsed = infotext.infotext_to_request_fields(infotext.parse_infotext(body.infotext))["fields"]
        data.update({k: v for k, v in parsed.items()
                     if k in GenerationRequest.model_fields and k not in body.model_fields_set})
    explicit = body.model_fields_set
    data["styles"] = list(body.styles or [])
    for name in ("prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "seed_resize_from_h",
                 "seed_resize_from_w", "batch_size", "n_iter", "steps", "cfg_scale", "width", "height"):
        if name in explicit or name not in data:
            data[name] = getattr(body, name)
    if explicit & {"sampler_name", "sampler_index"} or "sampler_name" not in data:
        data["sampler_name"] = body.sampler_name or body.sampler_index   # A1111: sampler_index is the fallback
    if "scheduler" in explicit or "scheduler" not in data:
        data["scheduler"] = body.scheduler or "Automatic"
    if "tiling" in explicit or "tiling" not in data:
        data["tiling"] = bool(body.tiling)
    if body.denoising_strength is not None and ("denoising_strength" in explicit or "denoising_strength" not in data):
        data["denoising_strength"] = body.denoising_strength
    if image_mode:
        data.update(_image_fields(body, services))
    else:
        data.update({k: v for k, v in _hires_fields(body).items()
                     if k in explicit or k not in data or k == "hr_upscaler" and "hr_upscaler" not in data})
    if _wanted(body.refiner_checkpoint):
        data["refiner_checkpoint"] = body.refiner_checkpoint
        if body.refiner_switch_at is not None:
            data["refiner_switch_at"] = body.refiner_switch_at
    data.update(_script_fields(body, services, image_mode))
    try:
        data.update(controlnet_api.alwayson_fields(body.alwayson_scripts or {}))
    except controlnet_api.ApiError as error:
        raise validation_error(error.loc, str(error)) from None
    save = body.save_images
    data["save_images"] = save and not body.do_not_save_samples
    data["save_grid"] = save and not body.do_not_save_grid
    for key, value in (body.override_settings or {}).items():
        if key not in OVERRIDE_FIELDS:
            reason = "unknown option" if key not in OPTIONS else "cannot be overridden per request yet"
            raise validation_error(["override_settings", key], reason)
        data[OVERRIDE_FIELDS[key]] = value
    try:
        return validate_request(data, services.registry, services.networks, services.upscalers,
                                services.controlnet)
    except ValidationError as error:
        raise request_validation_error(error) from None


def request_validation_error(error: ValidationError) -> HTTPException:
    details = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        loc = list(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        field, _, reason = message.partition(": ")
        if reason and field.isidentifier() and (not loc or loc[-1] != field):   # cross-field rule: "field: reason"
            loc, message = [*loc, field], reason
        if loc and loc[0] in FIELD_LOCATIONS:
            loc = FIELD_LOCATIONS[loc[0]] + loc[1:]
        details.append({"loc": ["body", *loc], "msg": message, "type": item["type"]})
    return HTTPException(status_code=422, detail=details)


def encode_image(image) -> str:
    return images.encode_base64_png(image, image.info.get("parameters"))


def progress_of(job: Job | None, services: Services, skip_image: bool) -> models.ProgressResponse:
    if job is None:
        state = models.ProgressState(skipped=False, interrupted=False, job="", job_count=0, job_timestamp="0",
                                     job_no=0, sampling_step=0, sampling_steps=0)
        return models.ProgressResponse(progress=0.0, eta_relative=0.0, state=state, textinfo=None)
    state = models.ProgressState(
        skipped=job.skipped, interrupted=job.interrupted, job=job.kind, job_count=job.image_count,
        job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)), job_no=job.image_index,
        sampling_step=job.step, sampling_steps=job.steps)
    current = None
    if not skip_image and job.preview is not None:
        buffer = io.BytesIO()
        job.preview.save(buffer, format="PNG")
        current = base64.b64encode(buffer.getvalue()).decode("ascii")
    return models.ProgressResponse(
        progress=round(job.progress, 4), eta_relative=round(job.eta or 0.0, 2), state=state, current_image=current,
        textinfo=job.textinfo, id=job.id, status=job.state, queue_position=services.queue.position(job),
        error=job.error)


def _auth_dependency(credentials: str | None):
    if not credentials:
        return []
    allowed = [tuple(pair.split(":", 1)) for pair in credentials.split(",") if ":" in pair]
    basic = HTTPBasic()

    def check(given: HTTPBasicCredentials = Depends(basic)):
        for user, password in allowed:
            if secrets.compare_digest(given.username, user) and secrets.compare_digest(given.password, password):
                return
        raise HTTPException(status_code=401, detail="incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return [Depends(check)]


async def wait_for(job: Job) -> Job:
    # Poll instead of blocking a thread: waiting requests must not starve /progress (no thread held).
    while not job.done.is_set():
        await asyncio.sleep(0.02)
    return job


def create_routers(services: Services) -> list[APIRouter]:
    """/sdapi/v1 and the ControlNet extension's /controlnet, both behind --api-auth."""
    auth = _auth_dependency(services.args.api_auth)
    return [create_router(services, auth),
            controlnet_api.create_router(services, wait_for, encode_image, auth)]


def create_router(services: Services, auth: list) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", dependencies=auth)

    async def finished(submit, job_id: str | None = None) -> Job | JSONResponse:
        """Submit, wait without holding a thread, and turn a failed job into A1111's error body."""
        try:
            job = submit(job_id=job_id)
        except QueueFull as error:
            raise HTTPException(status_code=429, detail=str(error)) from None
        await wait_for(job)
        if job.state == "cancelled":
            raise HTTPException(status_code=409, detail="the job was interrupted before it started")
        if job.state == "failed":
            return JSONResponse(status_code=job.error_status, content={"error": "GenerationError",
                                                                       "detail": job.error})
        return job

    @router.post("/txt2img", response_model=models.ImageResponse)
    async def txt2img(body: models.Txt2ImgRequest):
        request = to_generation_request(body, services)
        job = await finished(lambda job_id: services.submit_txt2img(request, job_id=job_id), body.force_task_id)
        if isinstance(job, JSONResponse):
            return job
        result = job.result
        pictures = list(result.images) + result.detected_maps   # the ControlNet extension appends its maps
        encoded = [encode_image(image) for image in pictures] if body.send_images else []
        return models.ImageResponse(images=encoded, parameters=body.model_dump(), info=result.info_json())

    @router.post("/img2img", response_model=models.ImageResponse)
    async def img2img(body: models.Img2ImgRequest):
        request = to_generation_request(body, services)
        job = await finished(lambda job_id: services.submit_img2img(request, job_id=job_id), body.force_task_id)
        if isinstance(job, JSONResponse):
            return job
        result = job.result
        pictures = (list(result.images) + result.detected_maps
                    + (list(request.init_images) if body.include_init_images else []))
        encoded = [encode_image(image) for image in pictures] if body.send_images else []
        parameters = body.model_dump()
        if not body.include_init_images:   # A1111 does not echo the (large) images back
            parameters.update(init_images=None, mask=None)
        return models.ImageResponse(images=encoded, parameters=parameters, info=result.info_json())

    def extras_request(body: models.ExtrasOptions):
        from modules.postprocessing import validate_extras

        data = body.model_dump(exclude={"image", "imageList"})
        data["save_images"] = False   # A1111's API returns the images without saving them
        try:
            return validate_extras(data, services.upscalers)
        except ValidationError as error:
            raise request_validation_error(error) from None

    async def run_extras(request, inputs) -> Job | JSONResponse:
        return await finished(lambda job_id: services.submit_extras(request, inputs, job_id=job_id))

    @router.post("/extra-single-image", response_model=models.ExtrasSingleImageResponse)
    async def extra_single_image(body: models.ExtrasSingleImageRequest):
        request = extras_request(body)
        if not body.image:
            raise validation_error(["image"], "an image is required (base64 or data URI)")
        job = await run_extras(request, [(_decode_image(body.image, ["image"]), "")])
        if isinstance(job, JSONResponse):
            return job
        result = job.result
        image = result.images[0] if result.images else None
        return models.ExtrasSingleImageResponse(html_info=result.html_info,
                                                image=encode_image(image) if image is not None else None)

    @router.post("/extra-batch-images", response_model=models.ExtrasBatchImagesResponse)
    async def extra_batch_images(body: models.ExtrasBatchImagesRequest):
        request = extras_request(body)
        inputs = [(_decode_image(item.data, ["imageList", index, "data"]), item.name)
                  for index, item in enumerate(body.imageList)]
        job = await run_extras(request, inputs)
        if isinstance(job, JSONResponse):
            return job
        result = job.result
        return models.ExtrasBatchImagesResponse(html_info=result.html_info,
                                                images=[encode_image(image) for image in result.images])

    @router.get("/upscalers")
    def upscalers():
        services.upscalers.refresh()
        return services.upscalers.api_list()

    @router.get("/latent-upscale-modes")
    def latent_upscale_modes():
        from modules.upscalers import latent_api_list

        return latent_api_list()

    @router.get("/face-restorers")
    def face_restorers():
        return services.restorers.api_list()

    @router.get("/scripts")
    def scripts():
        from modules import img2img_scripts

        return {"txt2img": [], "img2img": [name.lower() for name in img2img_scripts.SCRIPTS]}

    @router.get("/progress", response_model=models.ProgressResponse)
    def progress(skip_current_image: bool = False, id: str | None = None):
        job = services.queue.get(id) if id else services.queue.current
        if id and job is None:
            raise HTTPException(status_code=404, detail=f"no job with id {id!r}")
        return progress_of(job, services, skip_current_image)

    @router.post("/interrupt")
    def interrupt(id: str | None = None):
        return {"interrupted": services.queue.interrupt(id)}

    @router.post("/skip")
    def skip(id: str | None = None):
        return {"skipped": services.queue.skip(id)}

    @router.get("/sd-models", response_model=list[models.SDModelItem])
    def sd_models():
        return [models.SDModelItem(title=info.title, model_name=info.model_name, hash=info.shorthash,
                                   sha256=info.sha256, filename=str(info.filename),
                                   config=str(info.sidecar_yaml) if info.sidecar_yaml.is_file() else None)
                for info in services.registry.items()]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints():
        services.refresh_checkpoints()
        return {}

    @router.get("/samplers", response_model=list[models.SamplerItem])
    def list_samplers():
        return samplers.api_samplers()

    @router.get("/schedulers", response_model=list[models.SchedulerItem])
    def list_schedulers():
        return samplers.api_schedulers()

    @router.get("/options")
    def get_options():
        values = services.options.as_dict()
        if services.args.hide_ui_dir_config:
            values = {k: v for k, v in values.items() if not (k in OPTIONS and OPTIONS[k].restrict_api)}
        return values

    @router.post("/options")
    async def set_options(request: Request):
        try:
            changes = await request.json()
        except ValueError:
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
            try:
                job = services.submit_model_switch(checkpoint)
            except QueueFull as error:
                raise HTTPException(status_code=429, detail=str(error)) from None
            await wait_for(job)
            if job.state == "failed":
                return JSONResponse(status_code=job.error_status, content={"error": "ModelLoadError",
                                                                           "detail": job.error})
        services.update_options(checked, from_api=True)
        return {}

    @router.get("/cmd-flags")
    def cmd_flags():
        return public_flags(services.args)

    @router.post("/png-info", response_model=models.PngInfoResponse)
    def png_info(body: models.PngInfoRequest):
        try:
            image = images.decode_base64_image(body.image)
            text, items = images.read_info(image)
        except ValueError as error:
            raise validation_error(["image"], str(error)) from None
        parameters = infotext.parse_infotext(text) if text else {}
        if text:
            items = {"parameters": text, **items}
        return models.PngInfoResponse(info=text or "", items=items, parameters=parameters)

    @router.get("/prompt-styles")
    def prompt_styles():
        return services.networks.styles.api_list()

    @router.get("/sd-vae")
    def sd_vae():
        return services.networks.vaes.api_list()

    @router.post("/refresh-vae")
    def refresh_vae():
        services.networks.vaes.refresh()
        return {}

    @router.get("/embeddings")
    def embeddings():
        from modules.networks.textual_inversion import encoder_widths

        model = services.models.current
        database = services.networks.embeddings
        database.refresh()
        return database.api_listing(encoder_widths(model.pipeline) if model is not None else None)

    @router.post("/refresh-embeddings")
    def refresh_embeddings():
        services.networks.embeddings.refresh()
        return {}

    @router.get("/loras")
    def loras():
        from modules.networks.lora import api_list

        return api_list(services.networks.loras)

    @router.post("/refresh-loras")
    def refresh_loras():
        services.networks.loras.refresh()
        return {}

    @router.get("/hypernetworks")
    def hypernetworks():
        from modules.networks.hypernetwork import api_list

        return api_list(services.networks.hypernetworks)

    @router.get("/memory")
    def memory():
        from modules.devices import memory_stats

        return memory_stats(services.devices.device)

    return router


MAX_BODY_BYTES = 128 * 1024 * 1024   # room for several base64 images in later img2img/ControlNet requests


def add_request_guards(app: FastAPI, allowed_origins: str | None) -> None:
    """Refuse oversized bodies, and state-changing API calls from other sites' pages (CSRF).

    No permissive CORS middleware is ever added (A1111 removes Gradio's for the same reason).
    """
    allowed = {origin.strip() for origin in (allowed_origins or "").split(",") if origin.strip()}

    @app.middleware("http")
    async def request_guard(request: Request, call_next):
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return JSONResponse(status_code=413, content={"error": "PayloadTooLarge",
                                                          "detail": f"request bodies are limited to "
                                                                    f"{MAX_BODY_BYTES} bytes"})
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin and request.url.path.startswith("/sdapi/"):
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin != own and origin not in allowed:
                return JSONResponse(status_code=403, content={"error": "Forbidden",
                                                              "detail": f"cross-origin request from {origin}"})
        return await call_next(request)


def add_request_log(app: FastAPI) -> None:
    """--api-log: one line per API request, with its status and duration."""
    import logging

    log = logging.getLogger("api")

    @app.middleware("http")
    async def request_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        if request.url.path.startswith("/sdapi/"):
            log.info("%s %s -> %d in %.3fs", request.method, request.url.path, response.status_code,
                     time.perf_counter() - started)
        return response
