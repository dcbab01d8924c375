"""A1111's `modules.progress`, for extensions that queue work of their own (agent-scheduler) or follow a task by id:
task ids on the web UI's job queue.

`current_task` is the task an extension announced with `start_task` and has not finished, else the id of the job
the queue is running (so "is anything running?" sees the web UI's own jobs too), else None. `pending_tasks` holds
the ids announced with `add_task_to_queue` and not started, then the jobs waiting on the queue (id → time queued).
`progressapi(ProgressRequest(id_task=...))` reports on either kind of id, as A1111's /internal/progress does.
"""
from __future__ import annotations

import base64
import collections
import random
import string
import threading
import time

from pydantic import BaseModel, Field

from modules.addons import running
from modules.addons.missing_names import missing_name

_lock = threading.Lock()
_announced: str | None = None                                # start_task's id, until finish_task
_waiting: collections.OrderedDict[str, float] = collections.OrderedDict()   # add_task_to_queue's ids
_finished: list[str] = []
recorded_results: list = []
recorded_results_limit = 2
_FINISHED_KEPT = 16


def _queue():
    try:
        return running.services().queue
    except RuntimeError:   # before the web UI has started: only the extensions' own ids
        return None


def create_task_id(task_type: str) -> str:
    """A1111's form: "task(txt2img-AB12CD3)"."""
    return f"task({task_type}-{''.join(random.choices(string.ascii_uppercase + string.digits, k=7))})"


def add_task_to_queue(id_job: str) -> None:
    with _lock:
        _waiting[id_job] = time.time()


def start_task(id_task: str) -> None:
    global _announced
    with _lock:
        _announced = id_task
        _waiting.pop(id_task, None)


def finish_task(id_task: str) -> None:
    global _announced
    with _lock:
        if _announced == id_task:
            _announced = None
        _finished.append(id_task)
        del _finished[:-_FINISHED_KEPT]


def record_results(id_task: str, res) -> None:
    recorded_results.append((id_task, res))
    del recorded_results[:-recorded_results_limit]


def _current() -> str | None:
    if _announced is not None:
        return _announced
    queue = _queue()
    job = queue.current if queue is not None else None
    return job.id if job is not None else None


def _pending() -> collections.OrderedDict[str, float]:
    with _lock:
        pending = collections.OrderedDict(_waiting)
    queue = _queue()
    for job in queue.pending() if queue is not None else []:
        pending.setdefault(job.id, job.created)
    return pending


class PendingTasksResponse(BaseModel):
    size: int = Field(title="Pending task size")
    tasks: list[str] = Field(title="Pending task ids")


class ProgressRequest(BaseModel):
    id_task: str | None = Field(default=None, title="Task ID", description="id of the task to get progress for")
    id_live_preview: int = Field(default=-1, title="Live preview image ID",
                                 description="id of last received last preview image")
    live_preview: bool = Field(default=True, title="Include live preview",
                               description="boolean flag indicating whether to include the live preview image")


class ProgressResponse(BaseModel):
    active: bool = Field(title="Whether the task is being worked on right now")
    queued: bool = Field(title="Whether the task is in queue")
    completed: bool = Field(title="Whether the task has already finished")
    progress: float | None = Field(default=None, title="Progress", description="The progress with a range of 0 to 1")
    eta: float | None = Field(default=None, title="ETA in secs")
    live_preview: str | None = Field(default=None, title="Live preview image",
                                     description="Current live preview; a data: uri")
    id_live_preview: int | None = Field(
        default=None, title="Live preview image ID",
        description="Send this together with next request to prevent receiving same image")
    textinfo: str | None = Field(default=None, title="Info text", description="Info text used by WebUI.")


def get_pending_tasks() -> PendingTasksResponse:
    tasks = list(_pending())
    return PendingTasksResponse(size=len(tasks), tasks=tasks)


def progressapi(req: ProgressRequest) -> ProgressResponse:
    """Where the task stands; for a job of the queue that is running, its progress, ETA and live preview."""
    queue = _queue()
    job = queue.get(req.id_task) if queue is not None and req.id_task else None
    if job is None and queue is not None and req.id_task is not None and req.id_task == _announced:
        job = queue.current   # an extension's own task: the work the queue is doing for it
    pending = _pending()
    running = queue.current if queue is not None else None
    active = req.id_task is not None and req.id_task in (_current(), running.id if running else None)
    queued = req.id_task in pending
    completed = req.id_task in _finished or (job is not None and job.done.is_set())
    if not active or job is None:
        textinfo = "Waiting..."
        if queued:
            textinfo = f"In queue: {list(pending).index(req.id_task) + 1}/{len(pending)}"
        return ProgressResponse(active=active, queued=queued, completed=completed, id_live_preview=-1,
                                textinfo=textinfo)
    preview, preview_id = None, req.id_live_preview
    if req.live_preview and job.preview_id != req.id_live_preview:
        image = job.preview
        if image is not None:
            from modules import images

            preview = "data:image/png;base64," + base64.b64encode(images.image_to_png_bytes(image, None)).decode()
            preview_id = job.preview_id
    return ProgressResponse(active=True, queued=False, completed=False, progress=job.progress, eta=job.eta,
                            live_preview=preview, id_live_preview=preview_id, textinfo=job.textinfo or None)


def __getattr__(name: str):
    # The live values (PEP 562): they follow the job queue.
    if name == "current_task":
        return _current()
    if name == "pending_tasks":
        return _pending()
    if name == "finished_tasks":
        return list(_finished)
    raise missing_name("modules.progress", name)
