"""The Train tab (A1111's elem_ids): Prepare (a folder of images → a training folder), Create embedding, Create
hypernetwork, Train (an embedding or a hypernetwork), Train LoRA and Train ControlNet — each a job of the queue,
followed here with its progress; a training also with a loss chart drawn as it runs (`training/loss_chart.py`) and
a gallery of its previews. Interrupt saves this page's training, and training it again resumes it. Extensions add
sub-tabs through `on_ui_train_tabs`. The forms are `train_forms.py`.
"""
from __future__ import annotations

import asyncio
import html
from pathlib import Path

import gradio as gr
from PIL import Image
from pydantic import ValidationError

from modules.jobs import Interrupted, QueueFull
from modules.training.controlnet_training import TrainControlNetRequest
from modules.training.lora_requests import TrainLoraRequest
from modules.training.loss_chart import loss_chart
from modules.training.preprocess import PreprocessRequest
from modules.training.requests import (CreateEmbeddingRequest, CreateHypernetworkRequest, TrainEmbeddingRequest,
                                       TrainHypernetworkRequest)
from modules.ui import progress, train_forms
from modules.ui.common import PRIVATE, message_html
from modules.ui.output import error_html

MAX_GALLERY_PREVIEWS = 24   # the latest previews shown (each held in memory while the page follows)



def _validated(model, values: dict):
    try:
        return model(**values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
                             for item in error.errors())
        raise gr.Error(html.escape(problems), title="Train", print_exception=False) from None


def _submitted(submit):
    try:
        return submit()
    except QueueFull as error:
        raise gr.Error(html.escape(str(error)), title="Queue full", print_exception=False) from None


async def _finished(services, job):
    async for _ in progress.watch(job, services.queue):
        pass
    return job


async def run_prepare(services, values: dict) -> str:
    request = _validated(PreprocessRequest, values)
    job = await _finished(services, _submitted(lambda: services.submit_preprocess(request)))
    if job.state == "failed":
        return error_html(f"Preprocessing failed: {job.error}")
    result = job.result
    if result is None:
        return message_html("Interrupted.", "warning")
    text = f"Prepared {len(result.written)} image(s) into {request.destination_folder}"
    if result.skipped:
        text += f"\nSkipped: {'; '.join(result.skipped[:10])}"
    return message_html(text)


async def _run_create(services, values: dict, request_model, kind: str) -> str:
    """Create an embedding or a hypernetwork (`Services.submit_create_<kind>`): its file, or why not."""
    request = _validated(request_model, values)
    job = await _finished(services, _submitted(lambda: getattr(services, f"submit_create_{kind}")(request)))
    if job.state == "failed":
        return error_html(f"Could not create the {kind}: {job.error}")
    return message_html(f"Created: {job.result}")


def run_create_embedding(services, values: dict):
    return _run_create(services, values, CreateEmbeddingRequest, "embedding")


def run_create_hypernetwork(services, values: dict):
    return _run_create(services, values, CreateHypernetworkRequest, "hypernetwork")


def _losses(job) -> list[tuple[int, float]]:
    """The (step, loss) pairs of the training so far (the trainer appends to them as it goes)."""
    return list(getattr(job.result or job.partial_result, "losses", None) or [])


class _PreviewGallery:
    """The training's preview images for the gallery, newest last, each read from its file once (every preview is
    listed by the trainer, so none is missed between two looks); the latest MAX_GALLERY_PREVIEWS are kept."""

    def __init__(self, job):
        self.job, self.read, self.items = job, set(), []

    def update(self) -> list[tuple[Image.Image, str]]:
        made = list(getattr(self.job.result or self.job.partial_result, "previews", None) or [])
        for step, path in made:
            if path not in self.read:
                self.read.add(path)
                image = _read_preview(path)
                if image is not None:
                    self.items = (self.items + [(image, f"step {step}")])[-MAX_GALLERY_PREVIEWS:]
        return self.items


def _read_preview(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError:   # removed or unreadable meanwhile: left out of the gallery
        return None


def _steps_label(kind: str) -> str:
    """The label of the field that sets where a training of this kind stops (A1111's Train form: Max steps)."""
    return "Max steps" if kind in ("embedding", "hypernetwork") else "Steps"


def _outcome(result) -> str:
    """The final message of a training that ran to its end (or was interrupted after starting)."""
    resumed = f"Resumed from step {result.started_from}; " if result.started_from > 0 else ""
    if result.interrupted:
        return message_html(f"{resumed}Interrupted at step {result.step}: saved to {result.path}. "
                            "Train it again to resume.", "warning")
    if not result.losses and result.step == result.started_from > 0:   # nothing left to do: no step ran
        return message_html(f"'{result.name}' has already been trained to step {result.step}: raise "
                            f"{_steps_label(result.kind)} to train on.", "warning")
    finished = "training finished" if resumed else "Training finished"
    return message_html(f"{resumed}{finished} at step {result.step}: {result.path}"
                        + (f"\nLog: {result.log_folder}" if result.log_folder else ""))


async def follow_training(services, job):
    """Yields (status HTML, loss chart, preview gallery) while the training runs, then its outcome."""
    gallery = _PreviewGallery(job)
    yield progress.progress_html(job, services.queue.position(job)), loss_chart([]), []
    charted, shown = 0, 0   # steps on the page's chart, previews in its gallery: unchanged ones are not sent again
    async for snapshot in progress.watch(job, services.queue):
        losses, images = _losses(job), await asyncio.to_thread(gallery.update)
        chart = loss_chart(losses) if len(losses) != charted else gr.skip()
        previews = images if len(gallery.read) != shown else gr.skip()
        charted, shown = len(losses), len(gallery.read)
        yield snapshot.html, chart, previews
    result = job.result
    images = await asyncio.to_thread(gallery.update)
    if job.state == "failed":
        interrupted = job.error_kind is not None and issubclass(job.error_kind, Interrupted)
        status = message_html(job.error, "warning") if interrupted else error_html(f"Training failed: {job.error}")
        yield status, loss_chart(_losses(job)), images
        return
    chart = loss_chart(_losses(job))
    if result is None:
        yield message_html("Interrupted before the first step.", "warning"), chart, images
    else:
        yield _outcome(result), chart, images


async def _run_training(services, values: dict, request_model, submit_name: str,
                        chosen: tuple[str, str] | None = None):
    """Validate the form's values as `request_model`, submit the job through `Services.<submit_name>`, follow it.
    `chosen`: (the field naming the file to train, what to tell a user who picked none)."""
    if chosen and not values.get(chosen[0]):
        raise gr.Error(chosen[1], title="Train", print_exception=False)
    request = _validated(request_model, values)
    job = _submitted(lambda: getattr(services, submit_name)(request))
    async for update in follow_training(services, job):
        yield (*update, job.id)   # the job id: what this session's Interrupt stops


def interrupt_training(services, job_id: str | None) -> None:
    """Interrupt stops this browser session's training, never another client's job: with none known here (a
    reloaded page), nothing (/sdapi/v1/interrupt?id= stops any job by its id)."""
    if job_id:
        services.queue.interrupt(job_id)


def run_train_embedding(services, values: dict):
    return _run_training(services, values, TrainEmbeddingRequest, "submit_train_embedding",
                         chosen=("embedding_name", "Choose an embedding to train (create one under Create embedding)"))


def run_train_hypernetwork(services, values: dict):
    return _run_training(services, values, TrainHypernetworkRequest, "submit_train_hypernetwork",
                         chosen=("hypernetwork_name",
                                 "Choose a hypernetwork to train (create one under Create hypernetwork)"))


def run_train_lora(services, values: dict):
    return _run_training(services, values, TrainLoraRequest, "submit_train_lora")


def run_train_controlnet(services, values: dict):
    return _run_training(services, values, TrainControlNetRequest, "submit_train_controlnet")


# A1111's "Read parameters (prompt, etc...) from txt2img tab when making previews": the preview_* request field →
# the txt2img tab's field whose value it takes
PREVIEW_FROM_TXT2IMG = {"preview_prompt": "prompt", "preview_negative_prompt": "negative_prompt",
                        "preview_steps": "steps", "preview_sampler_name": "sampler_name",
                        "preview_cfg_scale": "cfg_scale", "preview_seed": "seed", "preview_width": "width",
                        "preview_height": "height"}


def create_tab(services, demo: gr.Blocks | None = None, txt2img=None) -> None:
    """The tab; with `txt2img` (the txt2img tab's handles) the Train form sends that tab's prompt, sampler, steps,
    CFG scale, seed and size for previews "read from the txt2img tab", as A1111 does."""
    with gr.Row(equal_height=False):
        # the forms' column takes two thirds: its six sub-tabs' buttons fit in one bar from 1280 px up (in half
        # the page Gradio moved the last ones into its "⋯" menu)
        with gr.Column(scale=2):
            with gr.Tabs(elem_id="train_tabs"):
                with gr.Tab("Prepare", id="prepare"):
                    prepare = train_forms.prepare_form()
                with gr.Tab("Create embedding", id="create_embedding"):
                    create_embedding = train_forms.create_embedding_form()
                with gr.Tab("Create hypernetwork", id="create_hypernetwork"):
                    create_hypernetwork = train_forms.create_hypernetwork_form()
                with gr.Tab("Train", id="train"):
                    train = train_forms.train_form(services)
                with gr.Tab("Train LoRA", id="train_lora"):
                    train_lora = train_forms.train_lora_form()
                with gr.Tab("Train ControlNet", id="train_controlnet"):
                    train_controlnet = train_forms.train_controlnet_form(services)
                # extensions' sub-tabs (A1111 passes UiTrainTabParams, whose txt2img preview fields are not kept)
                services.scripts.callbacks.fire("ui_train_tabs", None)
        with gr.Column(scale=1, elem_id="ti_gallery_container"):
            outcome = gr.HTML(elem_id="ti_error")
            chart = gr.Image(label="Loss", type="pil", interactive=False, elem_id="ti_loss_chart")
            preview = gr.Gallery(label="Previews", columns=3, interactive=False, elem_id="ti_gallery")

    def connect(form: dict, run, outputs: list, after=None):
        outputs = outputs + (form.get("refreshed") or [])
        # concurrency_limit=None: every click goes straight to the job queue (which orders the work and gives the
        # page its job id at once); Gradio's default of one run per button held a second page's click back
        # unnumbered, so its Interrupt could not name its own job
        form["button"].click(form_handler(services, form, run, len(outputs), after),
                             inputs=list(form["inputs"].values()), outputs=outputs, concurrency_limit=None,
                             api_visibility=PRIVATE)

    def embedding_choices():
        return (gr.update(choices=train_forms.embedding_names(services)),)

    def hypernetwork_choices():
        return (gr.update(choices=train_forms.hypernetwork_names(services)),)

    def template_choices():   # the 🔄 beside Prompt template: the templates folder listed again
        return (gr.update(choices=train_forms.template_names(services)),)

    connect(prepare, run_prepare, [outcome])
    create_embedding["refreshed"] = [train["embedding_name"]]
    connect(create_embedding, run_create_embedding, [outcome], after=embedding_choices)
    create_hypernetwork["refreshed"] = [train["hypernetwork_name"]]
    connect(create_hypernetwork, run_create_hypernetwork, [outcome], after=hypernetwork_choices)
    if txt2img is not None:
        for form in (train["embedding"], train["hypernetwork"]):
            form["inputs"].update({field: txt2img.fields[name] for field, name in PREVIEW_FROM_TXT2IMG.items()})
    training_job = gr.State(None)
    for form, run in ((train["embedding"], run_train_embedding), (train["hypernetwork"], run_train_hypernetwork),
                      (train_lora, run_train_lora), (train_controlnet, run_train_controlnet)):
        connect(form, run, [outcome, chart, preview, training_job])
    for interrupt in (train["interrupt"], train_lora["interrupt"], train_controlnet["interrupt"]):
        interrupt.click(lambda job_id: interrupt_training(services, job_id), inputs=[training_job], queue=False,
                        api_visibility=PRIVATE)
    for button, choices, dropdown in ((train["refresh_embedding"], embedding_choices, train["embedding_name"]),
                                      (train["refresh_hypernetwork"], hypernetwork_choices,
                                       train["hypernetwork_name"]),
                                      (train["refresh_template"], template_choices, train["template_filename"])):
        button.click(lambda choices=choices: choices()[0], outputs=[dropdown], show_progress="hidden",
                     api_visibility=PRIVATE)


def text_inputs(inputs: dict) -> set[str]:
    """The names of a form's inputs whose value is one string: Textboxes, single-choice Dropdowns, Radios."""
    return {name for name, component in inputs.items()
            if isinstance(component, (gr.Textbox, gr.Radio))
            or (isinstance(component, gr.Dropdown) and not component.multiselect)}


def form_values(inputs: dict, values, texts: set[str]) -> dict:
    """A form's values by request field. A text field the page never drew (one in a closed accordion) arrives as
    None, not as the empty text the user sees there: it is sent as ""."""
    return {name: "" if value is None and name in texts else value for name, value in zip(inputs, values)}


def form_handler(services, form: dict, run, outputs: int, after=None):
    """The click handler of a form's button: it first empties the last run's message (so a new error's toast does
    not sit over an old "Training finished"), then yields the run's updates, each with `after()`'s (refreshed
    choices)."""
    texts = text_inputs(form["inputs"])

    async def on_click(*values):
        yield ("", *[gr.skip()] * (outputs - 1))
        async for update in _updates(run(services, form_values(form["inputs"], values, texts))):
            yield (*update, *(after() if after else ()))

    return on_click


async def _updates(work):
    """A run's updates as tuples: an async generator's each yield, or a coroutine's one result."""
    if hasattr(work, "__aiter__"):
        async for update in work:
            yield update if isinstance(update, tuple) else (update,)
    else:
        update = await work
        yield update if isinstance(update, tuple) else (update,)
