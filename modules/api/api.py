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
from modules.api import models
from modules.cmd_args import public_flags
from modules.jobs import Job, QueueFull
from modules.options import OPTIONS
from modules.processing import GenerationRequest, validate_request
from modules.services import Services

# Request fields this version cannot honour yet: asking for them is a clear 422, not a silent no-op.
NOT_YET_SUPPORTED = {
    "enable_hr": "hires fix is not available yet",
    "restore_faces": "face restoration is not available yet",
    "script_name": "scripts are not available yet",
    "alwayson_scripts": "always-on scripts (ControlNet, ...) are not available yet",
    "refiner_checkpoint": "the refiner is not available yet",
    "firstpass_image": "hires fix is not available yet",
}
# override_settings keys that map onto request fields.
OVERRIDE_FIELDS = {"sd_model_checkpoint": "checkpoint", "CLIP_stop_at_last_layers": "clip_skip", "sd_vae": "vae"}
# Where a GenerationRequest field came from in the A1111 request, to name it in errors.
FIELD_LOCATIONS = {"checkpoint": ["override_settings", "sd_model_checkpoint"],
                   "clip_skip": ["override_settings", "CLIP_stop_at_last_layers"],
                   "vae": ["override_settings", "sd_vae"]}


def validation_error(loc: list, message: str, kind: str = "value_error") -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": ["body", *loc], "msg": message, "type": kind}])


def _wanted(value: Any) -> bool:
    return value not in (None, False, "", [], {}, "None")


def to_generation_request(body: models.Txt2ImgRequest, services: Services) -> GenerationRequest:
    for name, reason in NOT_YET_SUPPORTED.items():
        if _wanted(getattr(body, name)):
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
    save = body.save_images
    data["save_images"] = save and not body.do_not_save_samples
    data["save_grid"] = save and not body.do_not_save_grid
    for key, value in (body.override_settings or {}).items():
        if key not in OVERRIDE_FIELDS:
            reason = "unknown option" if key not in OPTIONS else "cannot be overridden per request yet"
            raise validation_error(["override_settings", key], reason)
        data[OVERRIDE_FIELDS[key]] = value
    try:
        return validate_request(data, services.registry, services.networks)
    except ValidationError as error:
        raise request_validation_error(error) from None


def request_validation_error(error: ValidationError) -> HTTPException:
    details = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        loc = list(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if not loc and ": " in message:  # cross-field rule: "field: reason"
            field, message = message.split(": ", 1)
            loc = [field]
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


def create_router(services: Services) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", dependencies=_auth_dependency(services.args.api_auth))

    async def wait_for(job: Job) -> Job:
        # Poll instead of blocking a thread: waiting requests must not starve /progress (no thread held).
        while not job.done.is_set():
            await asyncio.sleep(0.02)
        return job

    @router.post("/txt2img", response_model=models.ImageResponse)
    async def txt2img(body: models.Txt2ImgRequest):
        request = to_generation_request(body, services)
        try:
            job = services.submit_txt2img(request, job_id=body.force_task_id)
        except QueueFull as error:
            raise HTTPException(status_code=429, detail=str(error)) from None
        await wait_for(job)
        if job.state == "cancelled":
            raise HTTPException(status_code=409, detail="the job was interrupted before it started")
        if job.state == "failed":
            return JSONResponse(status_code=job.error_status, content={"error": "GenerationError",
                                                                       "detail": job.error})
        result = job.result
        encoded = [encode_image(image) for image in result.images] if body.send_images else []
        return models.ImageResponse(images=encoded, parameters=body.model_dump(), info=result.info_json())

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
                                                          "detail": f"request bodies are limited to {MAX_BODY_BYTES} bytes"})
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
