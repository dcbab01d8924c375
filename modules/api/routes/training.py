"""Training: POST /sdapi/v1/create/embedding, /train/embedding, /create/hypernetwork and /train/hypernetwork, with
A1111's bodies (the parameters of its `create_embedding`, `train_embedding`, `create_hypernetwork`,
`train_hypernetwork`) and answers (`{"info": "create embedding filename: ..."}`, `{"info": "train embedding
complete: filename: ... error: None"}`, the same with "hypernetwork"). Like A1111's, they answer when the work is
done; the work is a job of the queue, so /sdapi/v1/progress follows it and /sdapi/v1/interrupt stops it (the
training is saved, resumable); A1111's `id_task` names the job. Not A1111's: /train/lora (LoRA and DreamBooth-LoRA,
`training/lora_requests.py`) and /train/controlnet (`training/controlnet_training.py`).

Unlike A1111, which answers 200 with the error in `info`, a bad field is a 422 naming it and a training that
cannot start (no such embedding or hypernetwork, an unreadable dataset) a 4xx with the reason.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modules.api.callers import submitter
from modules.api.job_waiting import finished
from modules.jobs import Job
from modules.services import Services
from modules.training.controlnet_training import TrainControlNetRequest
from modules.training.lora_requests import TrainLoraRequest
from modules.training.requests import (CreateEmbeddingRequest, CreateHypernetworkRequest, TrainEmbeddingRequest,
                                       TrainHypernetworkRequest)


class InfoResponse(BaseModel):
    """A1111's CreateResponse / TrainResponse."""
    info: str


class _TaskId(BaseModel):
    # A1111's train_embedding/train_hypernetwork take the body as keyword arguments, their first being id_task:
    # its clients send it. Here it is the job's id, as force_task_id is for a generation (/progress can follow it).
    id_task: str | None = Field(None, max_length=128)


class TrainEmbeddingBody(TrainEmbeddingRequest, _TaskId):
    pass


class TrainHypernetworkBody(TrainHypernetworkRequest, _TaskId):
    pass


class TrainLoraBody(TrainLoraRequest, _TaskId):
    pass


class TrainControlNetBody(TrainControlNetRequest, _TaskId):
    pass


def _request(body: _TaskId, model: type[BaseModel]):
    """The training request without the API's id_task (every field as validated already)."""
    return model.model_construct(**body.model_dump(exclude={"id_task"}))


async def _answered(submit, error_name: str, describe, job_id: str | None = None) -> InfoResponse | JSONResponse:
    """Run the job (`submit(job_id)`) and wait for it: A1111's `{"info": ...}` when it ends, else the failed job's
    error body."""
    job = await finished(submit, job_id, error_name=error_name)
    return InfoResponse(info=describe(job)) if isinstance(job, Job) else job


def _created(kind: str):
    return lambda job: f"create {kind} filename: {job.result}"


def _trained(job) -> str:
    return job.result.info


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    @router.post("/create/embedding", response_model=InfoResponse)
    async def create_embedding(body: CreateEmbeddingRequest, http: Request):
        return await _answered(lambda job_id: services.submit_create_embedding(body, by=submitter(http)),
                               "CreateEmbeddingError", _created("embedding"))

    @router.post("/train/embedding", response_model=InfoResponse)
    async def train_embedding(body: TrainEmbeddingBody, http: Request):
        request = _request(body, TrainEmbeddingRequest)
        submit = services.submit_train_embedding
        return await _answered(lambda job_id: submit(request, job_id=job_id, by=submitter(http)), "TrainEmbeddingError",
                               _trained, body.id_task)

    @router.post("/create/hypernetwork", response_model=InfoResponse)
    async def create_hypernetwork(body: CreateHypernetworkRequest, http: Request):
        return await _answered(lambda job_id: services.submit_create_hypernetwork(body, by=submitter(http)),
                               "CreateHypernetworkError", _created("hypernetwork"))

    @router.post("/train/hypernetwork", response_model=InfoResponse)
    async def train_hypernetwork(body: TrainHypernetworkBody, http: Request):
        request = _request(body, TrainHypernetworkRequest)
        submit = services.submit_train_hypernetwork
        return await _answered(lambda job_id: submit(request, job_id=job_id, by=submitter(http)),
                               "TrainHypernetworkError", _trained, body.id_task)

    @router.post("/train/lora", response_model=InfoResponse,
                 summary="Train a LoRA (peft) on the loaded checkpoint; not in A1111",
                 description="SD 1.x, 2.x and SDXL. Writes models/Lora/<name>.safetensors in the kohya layout "
                             "with ss_* metadata (A1111, ComfyUI and diffusers read it), and <name>.safetensors.state "
                             "beside it: training the same name again resumes exactly. Answers when done; "
                             "/sdapi/v1/progress follows it, /sdapi/v1/interrupt stops and saves it.")
    async def train_lora(body: TrainLoraBody, http: Request):
        request = _request(body, TrainLoraRequest)
        submit = services.submit_train_lora
        return await _answered(lambda job_id: submit(request, job_id=job_id, by=submitter(http)), "TrainLoraError",
                               _trained, body.id_task)

    @router.post("/train/controlnet", response_model=InfoResponse,
                 summary="Train a ControlNet on the loaded checkpoint; not in A1111",
                 description="From a folder of images with captions and a folder of condition images of the same "
                             "names (condition_folder), or conditions made by a preprocessor (annotator). The "
                             "ControlNet starts from the checkpoint's UNet encoder with zero convolutions; only it "
                             "learns. Writes models/ControlNet/<name>.safetensors in the original layout "
                             "(control_model.*) and <name>.safetensors.state: training the same name again resumes "
                             "exactly.")
    async def train_controlnet(body: TrainControlNetBody, http: Request):
        request = _request(body, TrainControlNetRequest)
        submit = services.submit_train_controlnet
        return await _answered(lambda job_id: submit(request, job_id=job_id, by=submitter(http)),
                               "TrainControlNetError", _trained, body.id_task)

    return router
