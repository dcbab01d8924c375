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

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.concurrency import run_in_threadpool
from pydantic import ValidationError

from modules import images
from modules.output import infotext
from modules.diffusion import samplers
from modules.api import controlnet as controlnet_api, models, scripts as scripts_api, server as server_api
from modules.api.errors import error_body, validation_error
from modules.api.generation import (check_kept_overrides, keep_overrides, request_validation_error,
                                    to_generation_request)
from modules.api.image_inputs import decode_image_field
from modules.cmd_args import public_flags
from modules.addons import extensions as extensions_module
from modules.jobs import Job, JobIdInUse, QueueFull
from modules.services import Services


def encode_image(image) -> str:
    return images.encode_base64_png(image, image.info.get("parameters"))


async def encode_images(pictures: list) -> list[str]:
    """PNG-encoded in a thread: large images take a while, and /progress must not wait for them."""
    return await run_in_threadpool(lambda: [encode_image(image) for image in pictures])


def api_user(http: Request) -> str:
    """The --api-auth login of the call ("" without one; auth itself was checked before any route runs)."""
    scheme, _, encoded = http.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(encoded).decode("utf-8", "replace").partition(":")[0]
        except ValueError:
            pass
    return ""


def caller(http: Request) -> str:
    """Who is calling, to tell their job from others': the client's address and, with --api-auth, the user."""
    return f"{http.client.host if http.client else ''}|{api_user(http)}"


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
    """Until the job has ended, holding no thread (waiting requests must not starve /progress); the answer goes out
    as the job ends, not at the next turn of a polling loop."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()

    def wake() -> None:
        if not ended.done():
            ended.set_result(None)

    def from_worker() -> None:
        try:
            loop.call_soon_threadsafe(wake)
        except RuntimeError:   # the loop has closed (the server stopped): nobody is waiting any more
            pass

    job.when_done(from_worker)
    await ended
    return job


def create_routers(services: Services, server_control: server_api.ServerControl | None = None) -> list[APIRouter]:
    """/sdapi/v1, /internal/ping and the ControlNet extension's /controlnet, all behind --api-auth; with
    --api-server-stop also the server-* routes, acting through `server_control`."""
    auth = _auth_dependency(services.args.api_auth)
    routers = [create_router(services, auth), controlnet_api.create_router(services, wait_for, encode_image, auth)]
    internal = APIRouter(prefix="/internal", dependencies=auth)

    @internal.get("/ping")
    def ping():   # "is the server up?", e.g. after a restart
        return {}

    routers.append(internal)
    if services.args.api_server_stop:
        if server_control is None:
            raise ValueError("--api-server-stop needs the server's control (webui.main passes it)")
        routers.append(server_api.create_router(services, server_control, auth))
    return routers


def create_router(services: Services, auth: list) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", dependencies=auth)

    async def finished(submit, job_id: str | None = None, error_name: str = "GenerationError") -> Job | JSONResponse:
        """Submit, wait without holding a thread, and turn a failed job into A1111's error body."""
        try:
            job = submit(job_id=job_id)
        except QueueFull as error:
            raise HTTPException(status_code=429, detail=str(error)) from None
        except JobIdInUse as error:
            raise HTTPException(status_code=409, detail=f"force_task_id: {error}") from None
        await wait_for(job)
        if job.state == "cancelled":
            raise HTTPException(status_code=409, detail="the job was interrupted before it started")
        if job.state == "failed":
            return JSONResponse(status_code=job.error_status,
                                content=error_body(error_name, job.error, job.error))
        return job

    async def generated(body: models.Txt2ImgRequest, http: Request, submit):
        """A txt2img/img2img request run on the queue: (its GenerationRequest, the finished job) or an error."""
        # in a thread: decoding (or fetching) images must not hold up other requests such as /progress
        request = await run_in_threadpool(to_generation_request, body, services)
        check_kept_overrides(body, services)
        job = await finished(lambda job_id: submit(request, job_id=job_id, owner=caller(http), user=api_user(http)),
                             body.force_task_id)
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

    def extras_request(body: models.ExtrasOptions):
        from modules.postprocess.postprocessing import validate_extras

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
        image = await run_in_threadpool(decode_image_field, body.image, ["image"], services.options)
        job = await run_extras(request, [(image, "")])
        if isinstance(job, JSONResponse):
            return job
        result = job.result
        image = result.images[0] if result.images else None
        return models.ExtrasSingleImageResponse(html_info=result.html_info,
                                                image=encode_image(image) if image is not None else None)

    @router.post("/extra-batch-images", response_model=models.ExtrasBatchImagesResponse)
    async def extra_batch_images(body: models.ExtrasBatchImagesRequest):
        request = extras_request(body)
        inputs = [(await run_in_threadpool(decode_image_field, item.data, ["imageList", index, "data"],
                                           services.options), item.name)
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
        from modules.postprocess.upscalers import latent_api_list

        return latent_api_list()

    @router.get("/face-restorers")
    def face_restorers():
        return services.restorers.api_list()

    @router.get("/scripts", response_model=models.ScriptsList)
    def scripts():
        return scripts_api.script_lists(services)

    @router.get("/script-info", response_model=list[models.ScriptInfo])
    def script_info():
        return scripts_api.script_infos(services)

    @router.get("/extensions", response_model=list[models.ExtensionItem])
    def extensions():
        # Built-in and user extensions; commit_date is a string of the unix time, as A1111's model has it.
        return [{"name": item.name, "remote": item.remote, "branch": item.branch, "commit_hash": item.commit_hash,
                 "version": item.version, "commit_date": "" if item.commit_date is None else str(item.commit_date),
                 "enabled": item.enabled}
                for item in extensions_module.discover(services.paths, services.options, services.args)]

    @router.get("/realesrgan-models", response_model=list[models.RealesrganItem])
    def realesrgan_models():
        services.upscalers.refresh()
        return [{"name": item["name"], "path": item["model_path"], "scale": item["scale"]}
                for item in services.upscalers.api_list() if item["model_name"] == "RealESRGAN"]

    def job_of(http: Request, job_id: str | None) -> Job | None:
        """The job a call is about: the one named by id; else the caller's own queued or running job
        (A1111 clients send no id); else, as in A1111, the running one. With several --api-auth users each sees
        only the jobs submitted under their login."""
        user = api_user(http)
        if job_id:
            return services.queue.get(job_id, user)
        current = services.queue.current
        return services.queue.latest_of(caller(http)) or (current if current and current.user == user else None)

    @router.get("/progress", response_model=models.ProgressResponse)
    def progress(http: Request, skip_current_image: bool = False, id: str | None = None):
        job = job_of(http, id)
        if id and job is None:
            raise HTTPException(status_code=404, detail=f"no job with id {id!r}")
        return progress_of(job, services, skip_current_image)

    @router.post("/interrupt")
    def interrupt(http: Request, id: str | None = None):
        job = job_of(http, id)
        return {"interrupted": job is not None and services.queue.interrupt(job.id)}

    @router.post("/skip")
    def skip(http: Request, id: str | None = None):
        job = job_of(http, id)
        return {"skipped": job is not None and services.queue.skip(job.id)}

    @router.get("/jobs/{job_id}", response_model=models.JobResultResponse)
    def job_result(http: Request, job_id: str):
        """Ours: a job's outcome and images by id, for a client that lost its connection while waiting."""
        job = services.queue.get(job_id, api_user(http))
        if job is None:
            raise HTTPException(status_code=404, detail=f"no job with id {job_id!r}")
        generated = job.kind in ("txt2img", "img2img") and job.state in ("done", "interrupted")
        result = job.result if generated else None
        if generated and result is None:
            raise HTTPException(status_code=410, detail=f"the images of job {job_id!r} are no longer kept; "
                                                        "only the most recent jobs' images are")
        return models.JobResultResponse(
            id=job.id, status=job.state, error=job.error, info=result.info_json() if result else None,
            images=[encode_image(image) for image in result.images] if result else [])

    @router.get("/sd-models", response_model=list[models.SDModelItem])
    def sd_models():
        return [models.SDModelItem(title=info.title, model_name=info.model_name, hash=info.shorthash,
                                   sha256=info.sha256, filename=str(info.filename),
                                   config=str(info.sidecar_yaml) if info.sidecar_yaml.is_file() else None)
                for info in services.registry.items()]

    @router.post("/unload-checkpoint")
    async def unload_checkpoint():
        """Free the loaded checkpoints, on the queue after the jobs before it; the next job loads its model."""
        job = await finished(lambda job_id: services.submit_model_unload(), error_name="ModelLoadError")
        return job if isinstance(job, JSONResponse) else {}

    @router.post("/reload-checkpoint")
    async def reload_checkpoint():
        job = await finished(lambda job_id: services.submit_model_reload(), error_name="ModelLoadError")
        return job if isinstance(job, JSONResponse) else {}

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
            try:
                job = services.submit_model_switch(checkpoint)
            except QueueFull as error:
                raise HTTPException(status_code=429, detail=str(error)) from None
            await wait_for(job)
            if job.state == "failed":
                return JSONResponse(status_code=job.error_status,
                                    content=error_body("ModelLoadError", job.error, job.error))
        services.update_options(checked, from_api=True)
        return {}

    @router.get("/cmd-flags")
    def cmd_flags():
        return public_flags(services.args)

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
