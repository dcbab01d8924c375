"""Following a queued job from the browser: the progress bar text and the live preview.

The UI only watches: the job runs in the backend queue and finishes (and saves) whether or not the
browser that submitted it is still there.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator

from modules.jobs import Job, JobQueue
from modules.ui.common import escape_multiline

POLL_SECONDS = 0.25


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def progress_html(job: Job, position: int) -> str:
    """A1111's progress bar: percentage, step/total, ETA, and what the worker is doing."""
    if job.state == "queued":
        ahead = max(position, 0)   # position counts the running job among those ahead
        text = f"Waiting in queue: {ahead} job{'s' if ahead != 1 else ''} ahead" if ahead else "Waiting..."
        return f'<div class="progressDiv"><div class="progress" style="width:0%"></div>' \
               f'<span class="progress-text">{text}</span></div>'
    percent = int(job.progress * 100)
    parts = [f"{percent}%"]
    if job.steps:
        parts.append(f"Step {job.step}/{job.steps}")
        if job.image_count > 1:
            parts.append(f"Batch {job.image_index + 1}/{job.image_count}")
    parts.append(f"ETA: {format_eta(job.eta)}")
    info = f'<div class="progress-info">{escape_multiline(job.textinfo)}</div>' if job.textinfo else ""
    return (f'<div class="progressDiv"><div class="progress" style="width:{percent}%"></div>'
            f'<span class="progress-text">{" · ".join(parts)}</span></div>{info}')


@dataclass
class Snapshot:
    html: str
    preview: Any = None          # a new PIL preview since the last snapshot, else None


async def watch(job: Job, queue: JobQueue, interval: float = POLL_SECONDS) -> AsyncIterator[Snapshot]:
    """Yield the job's progress every `interval` seconds until it is done (never touches the job)."""
    seen_preview = 0
    while not job.done.is_set():
        await asyncio.sleep(interval)
        if job.done.is_set():
            break
        preview = None
        if job.preview_id != seen_preview:
            # A preview may be made on this first look (a TAESD decode on the GPU): not on the event loop.
            seen_preview, preview = job.preview_id, await asyncio.to_thread(lambda: job.preview)
        yield Snapshot(progress_html(job, queue.position(job)), preview)
