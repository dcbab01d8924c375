"""A job as a client follows it: GET /sdapi/v1/progress, POST /interrupt and /skip (A1111's, for the caller's own
job when no id is given), and our GET /jobs/{id} to collect a job's outcome later."""
from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request

from modules import images
from modules.api import models
from modules.api.callers import api_user, submitter
from modules.api.image_outputs import encode_image
from modules.jobs import Job
from modules.services import Services


def progress_of(job: Job | None, services: Services, skip_image: bool) -> models.ProgressResponse:
    if job is None:
        state = models.ProgressState(skipped=False, interrupted=False, job="", job_count=0, job_timestamp="0",
                                     job_no=0, sampling_step=0, sampling_steps=0)
        return models.ProgressResponse(progress=0.0, eta_relative=0.0, state=state, textinfo=None)
    state = models.ProgressState(
        skipped=job.skipped, interrupted=job.interrupted, job=job.kind, job_count=job.image_count,
        job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)), job_no=job.image_index,
        sampling_step=job.step, sampling_steps=job.steps)
    preview = None if skip_image else job.preview
    current = images.encode_base64_png(preview, None) if preview is not None else None
    return models.ProgressResponse(
        progress=round(job.progress, 4), eta_relative=round(job.eta or 0.0, 2), state=state, current_image=current,
        textinfo=job.textinfo, id=job.id, status=job.state, queue_position=services.queue.position(job),
        error=job.error)


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    def job_of(http: Request, job_id: str | None) -> Job | None:
        """The job a call is about: the one named by id; else the caller's own running job, else its newest
        queued one (A1111 clients send no id; A1111 reports and stops what runs); else, as in A1111, the running
        one. With several --api-auth users each sees only the jobs submitted under their login."""
        by = submitter(http)
        if job_id:
            return services.queue.get(job_id, by.user)
        current = services.queue.current
        if current is not None and current.by == by:
            return current
        return services.queue.latest_of(by) or (current if current and current.by.user == by.user else None)

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

    return router
