"""The job queue: one worker thread owns the device and runs jobs in order.

The UI and the API submit work here and get a job id back. Each job has its own progress, live
preview and interrupt/skip flags, so stopping one client's job never touches another's (A1111 has one
global flag). Jobs do not depend on the connection that submitted them: a job whose browser went away
still finishes and saves its images.
"""
from __future__ import annotations

import collections
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

# A finished job's result stays at least this long, whatever the count: its client is still collecting it.
RESULT_GRACE_SECONDS = 60.0


class QueueFull(Exception):
    pass


# An absolute path (POSIX or Windows) inside a message: "/srv/data/models/x.safetensors", "C:\\data\\x.ckpt".
_ABSOLUTE_PATH = re.compile(r"""(?<![\w/:.])(?:[A-Za-z]:)?(?:[\\/][^\\/\s'":,;]+)+[\\/]([^\\/\s'":,;]+)""")


def public_message(error: BaseException) -> str:
    """An unexpected error as a client may see it: its type and message, with any absolute path cut down to the
    file's name (the server's folders are nobody's business)."""
    return f"{type(error).__name__}: {_ABSOLUTE_PATH.sub(lambda match: match.group(1), str(error))}"


class JobIdInUse(Exception):
    """A job id (A1111's force_task_id) given again while the job with that id is still queued or running."""


class JobError(Exception):
    """A failure the user can act on, told in its message. Raised as is, the request was invalid (a bad value, an
    unsupported combination); the subclasses below name the other kinds of failure. The job records which kind
    it was (`Job.error_kind`), and each edge reports it in its own terms (the API: modules/api/errors.py)."""


class NotFound(JobError):
    """Something the request names does not exist (an unknown checkpoint)."""


class NotReady(JobError):
    """The request is valid, but the server cannot serve it in its present state (no checkpoint installed)."""


class Interrupted(JobError):
    """The job was stopped before it made anything to return (a script's loop interrupted early)."""


class OutOfMemory(JobError):
    """The device ran out of memory: a smaller size or batch, or a memory-saving mode, may fit."""


class StorageFull(JobError):
    """A file could not be written: the disk is full or the folder read-only."""


class ScriptFailed(JobError):
    """A script's own bug (it raised, or returned the wrong thing); the traceback is in the server log."""


class InternalError(JobError):
    """An unexpected exception inside the job (our bug); the worker records it with its public message."""


class Deferred:
    """A value made on first use, once, by whichever thread asks first; `release` (when the job ends) lets the
    maker give back what it holds on the GPU, keeping what it needs to make the value later.

    Live previews use it: the sampling thread leaves the step's latents (an asynchronous copy on the device) and a
    preview is decoded only when a client asks, in that client's thread. The sampling loop never waits for the GPU
    to make one (decoding it there and reading it back would stall the queue of launched kernels), and no preview
    is made that nobody looks at.
    """

    def __init__(self, make: Callable[[], Any], release: Callable[[], None] | None = None):
        self._make, self._release = make, release
        self._value: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._make is not None:
                make, self._make = self._make, None
                try:
                    self._value = make()
                except Exception:  # noqa: BLE001 - a failed preview must not fail the request that asked for it
                    log.exception("making a live preview failed")
            return self._value

    def release(self) -> None:
        with self._lock:
            if self._make is not None and self._release is not None:
                self._release()


@dataclass(frozen=True)
class Submitter:
    """Who submitted a job: the client's address and its --api-auth login (both "" for the UI and the server's own
    jobs). Only the same login sees a job; "my job" (A1111's calls without an id) is one of the same address and
    login."""

    address: str = ""
    user: str = ""


@dataclass
class Job:
    id: str
    kind: str
    run: Callable[["Job"], Any]
    by: Submitter = Submitter()
    state: str = "queued"            # queued → running → done | failed | interrupted | cancelled
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    step: int = 0
    steps: int = 0
    first_step: int = 0              # the step it began at (a resumed training): the ETA counts from there
    image_index: int = 0             # which batch (A1111 job_no) is being sampled
    image_count: int = 1             # number of batches (A1111 job_count); a script may announce more
    batches_done: int = 0            # over every generation in the job (a script's cells, loops)
    _preview: Any = field(default=None, repr=False)   # PIL image or Deferred, updated during sampling
    preview_id: int = 0
    textinfo: str = ""
    result: Any = None
    partial_result: Any = None       # what a running job has made so far, for its followers (a training's losses)
    error: str | None = None
    error_kind: type[JobError] | None = None   # when failed: which kind of JobError (InternalError if unexpected)
    interrupted: bool = False
    skipped: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    _on_done: list = field(default_factory=list, repr=False)   # callbacks, see when_done
    _on_done_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def progress(self) -> float:
        if self.state in ("done", "interrupted"):
            return 1.0
        if not self.steps:
            return 0.0
        total = self.steps * max(self.image_count, 1)
        return min(1.0, (self.image_index * self.steps + self.step) / total)

    @property
    def eta(self) -> float | None:
        """Seconds left, from the pace since the job started (a resumed training's steps before it not counted)."""
        start = self.first_step / self.steps if self.steps else 0.0
        if self.started is None or self.progress <= start:
            return None
        elapsed = time.time() - self.started
        return max(0.0, elapsed * (1.0 - self.progress) / (self.progress - start))

    def set_progress(self, step: int, steps: int, first_step: int | None = None) -> None:
        """`step` of `steps` done; `first_step`: where this job began counting (a resumed training's step)."""
        self.step, self.steps = step, steps
        if first_step is not None:
            self.first_step = first_step

    @property
    def preview(self):
        """The latest live preview (a PIL image or None), made now if the sampler left a Deferred."""
        current = self._preview
        return current.get() if isinstance(current, Deferred) else current

    @preview.setter
    def preview(self, image) -> None:
        self._preview = image

    def set_preview(self, image) -> None:
        """A new preview: a PIL image, or a Deferred that makes one when somebody first asks for it."""
        self._preview = image
        self.preview_id += 1

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once the job has ended: at once if it has, else from the worker as it ends (so it must
        be quick and thread-safe, e.g. `loop.call_soon_threadsafe`)."""
        with self._on_done_lock:
            if not self.done.is_set():
                self._on_done.append(callback)
                return
        callback()

    def mark_done(self) -> None:
        with self._on_done_lock:
            self.done.set()
            callbacks, self._on_done = self._on_done, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a waiter's failure must not reach the worker
                log.exception("a callback on the end of job %s failed", self.id)

    def release_preview(self) -> None:
        if isinstance(self._preview, Deferred):
            self._preview.release()

    def consume_skip(self) -> bool:
        """True once after skip was requested; sampling of the current batch stops, the job goes on."""
        if self.skipped:
            self.skipped = False
            return True
        return False

    @property
    def should_stop(self) -> bool:
        return self.interrupted or self.skipped


class InnerJob(Job):
    """A job run inside another job's run, never queued (a training's preview image, a class image): its own
    progress and preview, but the outer job's Interrupt stops it too, within a step, not after its last one."""

    def __init__(self, outer, **fields):
        self._outer, self._interrupted_itself = outer, False
        super().__init__(**fields)

    @property
    def interrupted(self) -> bool:
        return self._interrupted_itself or bool(self._outer.interrupted)

    @interrupted.setter
    def interrupted(self, value: bool) -> None:
        self._interrupted_itself = value


class JobQueue:
    def __init__(self, max_waiting: int | Callable[[], int] = 64, history: int = 100, kept_results: int = 16):
        """`max_waiting`: a number, or a function giving the current limit (the queue_max_size setting)."""
        self._max_waiting = max_waiting
        self._waiting: collections.deque[Job] = collections.deque()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._history = history
        # Finished jobs keep their images for a client that comes back by job id (one that disconnected);
        # only the most recent ones, so that history does not hold hundreds of images in memory.
        self._kept_results = kept_results
        self._with_results: collections.deque[Job] = collections.deque()
        self._current: Job | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="job-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------- submitting and looking up

    def submit(self, kind: str, run: Callable[[Job], Any], job_id: str | None = None,
               by: Submitter = Submitter()) -> Job:
        with self._cond:
            limit = self.max_waiting
            if len(self._waiting) >= limit:
                raise QueueFull(f"the queue is full ({limit} jobs waiting); try again later")
            earlier = self._jobs.get(job_id) if job_id else None
            if earlier is not None and (not earlier.done.is_set() or earlier.by.user != by.user):
                # Another user's id is never reused: their client may still collect that job by it.
                raise JobIdInUse(f"a job with id {job_id!r} is already queued or running"
                                 if earlier.by.user == by.user else f"the job id {job_id!r} is taken")
            job = Job(id=job_id or uuid.uuid4().hex, kind=kind, run=run, by=by)
            self._waiting.append(job)
            self._jobs[job.id] = job
            self._trim_history()
            self._cond.notify_all()
            return job

    @property
    def max_waiting(self) -> int:
        return int(self._max_waiting()) if callable(self._max_waiting) else self._max_waiting

    def on_worker(self) -> bool:
        """True when called from inside a running job (the worker thread)."""
        return threading.current_thread() is self._worker

    def get(self, job_id: str, user: str | None = None) -> Job | None:
        """The job with that id; with `user`, only if that user submitted it (others' jobs do not exist for them)."""
        with self._cond:
            job = self._jobs.get(job_id)
        return job if job is not None and (user is None or job.by.user == user) else None

    @property
    def current(self) -> Job | None:
        return self._current

    def latest_of(self, by: Submitter) -> Job | None:
        """The submitter's most recently submitted job that is still queued or running."""
        with self._cond:
            return next((job for job in reversed(self._jobs.values())
                         if job.by == by and not job.done.is_set()), None)

    def pending(self) -> list[Job]:
        with self._cond:
            return list(self._waiting)

    def position(self, job: Job) -> int:
        """0 when running, n when n jobs are ahead of it, -1 when finished."""
        with self._cond:
            if job is self._current:
                return 0
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return -1

    # ------------------------------------------------------------- stopping

    def interrupt(self, job_id: str | None = None) -> bool:
        """Stop a job: a queued one is removed, a running one stops after the current step.

        Without an id the running job is interrupted (A1111's /sdapi/v1/interrupt). Unknown or finished
        ids are a no-op and return False.
        """
        with self._cond:
            job = self._current if job_id is None else self._jobs.get(job_id)
            if job is None or job.done.is_set():
                return False
            job.interrupted = True
            if job in self._waiting:
                self._waiting.remove(job)
                self._finish(job, "cancelled")
            return True

    def skip(self, job_id: str | None = None) -> bool:
        with self._cond:
            job = self._current if job_id is None else self._jobs.get(job_id)
            if job is None or job.state != "running":
                return False
            job.skipped = True
            return True

    def shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            if self._current is not None:
                self._current.interrupted = True
            self._cond.notify_all()

    # ------------------------------------------------------------- the worker

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._waiting.popleft()
                job.state = "running"
                job.started = time.time()
                self._current = job
            try:
                job.result = job.run(job)
                state = "interrupted" if job.interrupted else "done"
            except JobError as error:
                job.error, job.error_kind, state = str(error), type(error), "failed"
            except Exception as error:  # noqa: BLE001 - a failed job must never take the worker down
                log.exception("job %s (%s) failed", job.id, job.kind)
                job.error, job.error_kind, state = public_message(error), InternalError, "failed"
            with self._cond:
                self._current = None
                self._finish(job, state)

    def _finish(self, job: Job, state: str) -> None:
        job.state = state
        job.finished = time.time()
        job.release_preview()
        job.mark_done()
        self._with_results.append(job)
        while len(self._with_results) > self._kept_results and \
                time.time() - self._with_results[0].finished > RESULT_GRACE_SECONDS:
            oldest = self._with_results.popleft()
            oldest.result = oldest.preview = oldest.partial_result = None

    def _trim_history(self) -> None:
        while len(self._jobs) > self._history + len(self._waiting) + 1:
            oldest_id, oldest = next(iter(self._jobs.items()))
            if not oldest.done.is_set():
                break
            del self._jobs[oldest_id]
