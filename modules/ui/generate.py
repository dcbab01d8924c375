"""The Generate button of both generation tabs: each click's jobs queued one after the other, followed with
progress and live preview, their images collected in the gallery; Interrupt and Skip for the running job."""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import gradio as gr

from modules.jobs import Job, QueueFull
from modules.ui import progress
from modules.ui.common import PRIVATE, escape_multiline
from modules.ui.output import OutputPanel, error_html, generation_state, infotext_html
from modules.ui.toprow import Toprow


@dataclass
class Submission:
    """One job of a Generate click: `submit` validates and queues it (gr.Error for bad input); `finished`, if
    given, gets the job's result (img2img batch: save it to the chosen folder)."""
    submit: Callable[[], Job]
    finished: Callable[[Any], None] | None = None


def connect_generation(services, top: Toprow, output: OutputPanel, inputs: list,
                       submissions: Callable[..., Iterable[Submission]], js: str | None = None):
    """Generate runs `submissions(*values)` (raising gr.Error for bad input) and then each submission in
    turn, one job after the other, following each with progress and live preview; the gallery
    collects every job's images. Interrupt and Skip act on this browser session's job only. Returns the
    Generate click's event, for a tab to follow with its own steps (`.success(...)`)."""
    job_id = gr.State(None)
    generate, interrupt, skip = top.generate, top.interrupt, top.skip
    busy_outputs = [generate, interrupt, skip, output.progress, output.preview, output.gallery, job_id]
    outputs = busy_outputs + [output.info, output.generation, output.selected]

    def idle() -> dict:
        return {generate: gr.update(visible=True), interrupt: gr.update(visible=False),
                skip: gr.update(visible=False), output.progress: gr.update(visible=False, value=""),
                output.preview: gr.update(visible=False, value=None), output.gallery: gr.update(visible=True),
                job_id: None}

    async def run(*values):
        pending = iter(submissions(*values))
        collected = []        # (result, seconds) of each finished job
        failure = None
        first = True
        for submission in pending:
            try:
                job = submission.submit()
            except QueueFull as error:
                raise gr.Error(html.escape(str(error)), title="Queue full", print_exception=False) from None
            except gr.Error as error:
                if first:
                    raise
                gr.Warning(getattr(error, "message", str(error)), title="Skipped", duration=15)   # one bad file
                continue
            first = False
            yield {generate: gr.update(visible=False), interrupt: gr.update(visible=True),
                   skip: gr.update(visible=True), job_id: job.id,
                   output.progress: gr.update(visible=True,
                                              value=progress.progress_html(job, services.queue.position(job))),
                   output.preview: gr.update(visible=False, value=None)}
            previewing = False   # the live preview takes the gallery's place while sampling, as in A1111
            async for snapshot in progress.watch(job, services.queue):
                update = {output.progress: snapshot.html}
                if snapshot.preview is not None:
                    update[output.preview] = gr.update(visible=True, value=snapshot.preview)
                    if not previewing:
                        update[output.gallery] = gr.update(visible=False)
                        previewing = True
                yield update
            seconds = (job.finished or time.time()) - (job.started or job.created)   # sampling, not queueing
            result = job.result
            if job.state == "failed":
                failure = f"Error: {job.error}"
                gr.Warning(html.escape(job.error or "generation failed"), title="Error", duration=15)
                break
            if result is None or not result.images:
                failure = ("Cancelled before it started." if job.state == "cancelled"
                           else "Interrupted: no image was finished.")
                break
            if result.warnings:   # add-ons that were not applied (missing, unsupported, for another model)
                gr.Warning(escape_multiline("\n".join(result.warnings)), title="Extra networks", duration=15)
            collected.append((result, seconds))
            if submission.finished is not None:
                submission.finished(result)
            if job.interrupted:
                break
        if not collected:
            yield {**idle(), output.info: error_html(failure or "Nothing to do.")}
            return
        # ControlNet's annotation maps follow the images, as the extension shows them side by side.
        images = [image for result, _ in collected for image in result.images]
        images += [image for result, _ in collected for image in result.detected_maps]
        last, seconds = collected[-1]
        total = sum(seconds for _, seconds in collected)
        generation = generation_state(last, total)
        if len(collected) > 1:   # a batch of files: every image's infotext, in gallery order
            generation.update(infotexts=[text for result, _ in collected for text in result.infotexts],
                              seeds=[seed for result, _ in collected for seed in result.seeds],
                              subseeds=[seed for result, _ in collected for seed in result.subseeds])
        yield {**idle(), output.gallery: gr.update(visible=True, value=images, selected_index=None),
               output.info: infotext_html(last.infotexts[0], total)
               + (error_html(failure) if failure else ""),
               output.generation: generation, output.selected: None}

    event = generate.click(run, inputs=inputs, outputs=outputs, show_progress="hidden", concurrency_limit=None,
                           js=js, api_visibility=PRIVATE)
    event.failure(idle, outputs=busy_outputs, queue=False, show_progress="hidden", api_visibility=PRIVATE)
    interrupt.click(lambda current: _act(services.queue.interrupt, current), inputs=[job_id], queue=False,
                    show_progress="hidden", api_visibility=PRIVATE)
    skip.click(lambda current: _act(services.queue.skip, current), inputs=[job_id], queue=False,
               show_progress="hidden", api_visibility=PRIVATE)
    return event


def _act(method, job: str | None) -> None:
    if job:
        method(job)
