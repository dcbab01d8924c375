"""A route's work on the job queue: submit it, wait for it without holding a thread, and answer as A1111 does when
the queue is full, the job id is taken, or the job was cancelled or failed."""
from __future__ import annotations

import asyncio

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from modules.api.errors import failed_job_response
from modules.jobs import Job, JobIdInUse, QueueFull


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


async def finished(submit, job_id: str | None = None, error_name: str = "GenerationError") -> Job | JSONResponse:
    """Submit (`submit(job_id=...)`), wait without holding a thread, and turn a failed job into A1111's error body."""
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
        return failed_job_response(job, error_name)
    return job
