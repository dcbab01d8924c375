"""The checkpoints and how they sample: GET /sdapi/v1/sd-models, POST /unload-checkpoint, /reload-checkpoint and
/refresh-checkpoints, GET /samplers and /schedulers."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from modules.api import models
from modules.api.callers import submitter
from modules.api.job_waiting import finished
from modules.diffusion import samplers
from modules.services import Services


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    @router.get("/sd-models", response_model=list[models.SDModelItem])
    def sd_models():
        return [models.SDModelItem(title=info.title, model_name=info.model_name, hash=info.shorthash,
                                   sha256=info.sha256, filename=str(info.filename),
                                   config=str(info.sidecar_yaml) if info.sidecar_yaml.is_file() else None)
                for info in services.registry.items()]

    @router.post("/unload-checkpoint")
    async def unload_checkpoint(http: Request):
        """Free the loaded checkpoints, on the queue after the jobs before it; the next job loads its model."""
        job = await finished(lambda job_id: services.submit_model_unload(by=submitter(http)), error_name="ModelLoadError")
        return job if isinstance(job, JSONResponse) else {}

    @router.post("/reload-checkpoint")
    async def reload_checkpoint(http: Request):
        job = await finished(lambda job_id: services.submit_model_reload(by=submitter(http)), error_name="ModelLoadError")
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

    return router
