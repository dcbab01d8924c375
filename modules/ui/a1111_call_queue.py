"""A1111's `modules.call_queue` for extensions' Gradio handlers.

`wrap_gradio_gpu_call(fn)` runs `fn` as a job of the project's job queue (A1111 holds its GPU lock around it): it
waits its turn behind generations, `shared.state` reports it (Interrupt sets `shared.state.interrupted`), and
`processing.process_images` inside it runs in that job. `wrap_gradio_call(fn)` turns an exception into A1111's error output (the extra outputs,
then `<div class='error'>Type: message</div>`). `queue_lock` is a lock extensions share (A1111's
`FIFOLock`); the project's own generations are already one at a time through the job queue, which is what it
guarded in A1111.
"""
from __future__ import annotations

import html
import logging
import threading
import time
from functools import wraps

from modules import devices, shared

log = logging.getLogger(__name__)


# A1111's FIFOLock is a plain lock too (not re-entrant); fairness aside, this is the same.
queue_lock = threading.Lock()


def wrap_queued_call(func):
    """`func` called holding `queue_lock`."""
    @wraps(func)
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)
    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    """`func` run as a job of the job queue (A1111's first argument "task(...)", a task id, names the job), with
    A1111's error output and "Time taken" (`wrap_gradio_call(..., add_stats=True)`)."""
    @wraps(func)
    def f(*args, **kwargs):
        task = args[0] if args and isinstance(args[0], str) and args[0].startswith("task(") else None
        queue = shared.services().queue
        if queue.on_worker():   # already inside a job: queuing would wait for itself
            return func(*args, **kwargs)
        job = queue.submit("extension", lambda job: func(*args, **kwargs), job_id=task)
        job.done.wait()
        if job.state == "failed":
            raise (job.error_kind or RuntimeError)(job.error or "the job failed")
        return job.result
    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats: bool = False):
    """`func`'s outputs as a tuple; when it raises, the error is logged and the outputs are `extra_outputs` (A1111's
    default `[None, '']`) followed by the error as HTML. `add_stats` appends the time taken to the last (HTML)
    output, as A1111 does."""
    @wraps(func)
    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        started = time.perf_counter()
        try:
            res = list(func(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - A1111 shows the error in the page instead of raising
            log.exception("Error completing request (%s)", getattr(func, "__name__", func))
            outputs = [None, ""] if extra_outputs_array is None else list(extra_outputs_array)
            res = outputs + [f"<div class='error'>{html.escape(f'{type(error).__name__}: {error}')}</div>"]
        devices.torch_gc()
        if add_stats and res and isinstance(res[-1], str):
            elapsed = time.perf_counter() - started
            minutes, seconds = divmod(elapsed, 60)
            text = (f"{int(minutes)} min. " if minutes else "") + f"{seconds:.1f} sec."
            res[-1] += (f"<div class='performance'><p class='time'>Time taken: <wbr>"
                        f"<span class='measurement'>{text}</span></p></div>")
        return tuple(res)
    return f
