"""The Train tab (A1111's elem_ids): Create embedding, and Train (an embedding) — each a job of the queue, followed
here with its progress and a loss chart drawn as it runs (`training/loss_chart.py`); Interrupt saves the training,
and training the same embedding again resumes it. Extensions add sub-tabs through `on_ui_train_tabs`.
"""
from __future__ import annotations

import html
import re

import gradio as gr
from pydantic import ValidationError

from modules.jobs import QueueFull
from modules.training.loss_chart import loss_chart
from modules.training.requests import CreateEmbeddingRequest, TrainEmbeddingRequest
from modules.ui import progress
from modules.ui.common import PRIVATE, message_html
from modules.ui.output import error_html

LOSS_IN_TEXT = re.compile(r"loss: ([0-9.eE+-]+)")


def embedding_names(services) -> list[str]:
    database = services.networks.embeddings
    database.refresh()
    return sorted(database.all)


def template_names(services) -> list[str]:
    folder = services.paths.training_templates
    return sorted(path.name for path in folder.glob("*.txt")) if folder.is_dir() else []


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


async def run_create_embedding(services, values: dict) -> str:
    request = _validated(CreateEmbeddingRequest, values)
    job = _submitted(lambda: services.submit_create_embedding(request))
    async for _ in progress.watch(job, services.queue):
        pass
    if job.state == "failed":
        return error_html(f"Could not create the embedding: {job.error}")
    return message_html(f"Created: {job.result}")


async def run_train_embedding(services, values: dict):
    """Submit the training and follow it: yields (status HTML, loss chart)."""
    request = _validated(TrainEmbeddingRequest, values)
    job = _submitted(lambda: services.submit_train_embedding(request))
    seen: dict[int, float] = {}
    yield progress.progress_html(job, services.queue.position(job)), loss_chart([])
    async for snapshot in progress.watch(job, services.queue):
        found = LOSS_IN_TEXT.search(job.textinfo or "")
        if found and job.steps:
            seen[job.step] = float(found.group(1))
        yield snapshot.html, loss_chart(sorted(seen.items()))
    result = job.result
    if job.state == "failed":
        yield error_html(f"Training failed: {job.error}"), loss_chart(sorted(seen.items()))
        return
    chart = loss_chart(result.losses if result and result.losses else sorted(seen.items()))
    if result is None:
        yield message_html("Interrupted before the first step.", "warning"), chart
    elif result.interrupted:
        yield message_html(f"Interrupted at step {result.step}: saved to {result.path}. Train it again to resume.",
                           "warning"), chart
    else:
        yield message_html(f"Training finished at step {result.step}: {result.path}"
                           + (f"\nLog: {result.log_folder}" if result.log_folder else "")), chart


def create_tab(services, demo: gr.Blocks | None = None) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            with gr.Tabs(elem_id="train_tabs"):
                with gr.Tab("Create embedding", id="create_embedding"):
                    create = _create_embedding_form()
                with gr.Tab("Train", id="train"):
                    train = _train_form(services)
                # extensions' sub-tabs (A1111 passes UiTrainTabParams, whose txt2img preview fields are not kept)
                services.scripts.callbacks.fire("ui_train_tabs", None)
        with gr.Column(scale=1, elem_id="ti_gallery_container"):
            outcome = gr.HTML(elem_id="ti_error")
            chart = gr.Image(label="Loss", type="pil", interactive=False, elem_id="ti_loss_chart")

    create_inputs = create.pop("inputs")

    async def on_create(*values):
        return await run_create_embedding(services, dict(zip(create_inputs, values))), \
            gr.update(choices=embedding_names(services))

    create["button"].click(on_create, inputs=list(create_inputs.values()), outputs=[outcome, train["embedding"]],
                           api_visibility=PRIVATE)
    train_inputs = train.pop("inputs")

    async def on_train(*values):
        async for status, picture in run_train_embedding(services, dict(zip(train_inputs, values))):
            yield status, picture

    train["button"].click(on_train, inputs=list(train_inputs.values()), outputs=[outcome, chart],
                          api_visibility=PRIVATE)
    train["interrupt"].click(lambda: services.queue.interrupt(), api_visibility=PRIVATE)
    train["refresh"].click(lambda: gr.update(choices=embedding_names(services)), outputs=[train["embedding"]],
                           show_progress="hidden", api_visibility=PRIVATE)


def _create_embedding_form() -> dict:
    inputs = {
        "name": gr.Textbox(label="Name", elem_id="train_new_embedding_name"),
        "init_text": gr.Textbox(label="Initialization text", value="*", elem_id="train_initialization_text"),
        "num_vectors_per_token": gr.Slider(label="Number of vectors per token", minimum=1, maximum=75, step=1,
                                           value=1, elem_id="train_nvpt"),
        "overwrite_old": gr.Checkbox(False, label="Overwrite Old Embedding", elem_id="train_overwrite_old_embedding"),
    }
    button = gr.Button("Create embedding", variant="primary", elem_id="train_create_embedding")
    return {"inputs": inputs, "button": button}


def _train_form(services) -> dict:
    with gr.Row():
        embedding = gr.Dropdown(embedding_names(services), label="Embedding", elem_id="train_embedding")
        refresh = gr.Button("\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}", scale=0, min_width=40,
                            elem_id="train_embedding_refresh")
    inputs = {"embedding_name": embedding}
    with gr.Row():
        inputs["learn_rate"] = gr.Textbox("0.005", label="Embedding Learning rate",
                                          elem_id="train_embedding_learn_rate")
    with gr.Row():
        inputs["clip_grad_mode"] = gr.Dropdown(["disabled", "value", "norm"], value="disabled",
                                               label="Gradient Clipping")
        inputs["clip_grad_value"] = gr.Textbox("0.1", label="Gradient clip value")
    with gr.Row():
        inputs["batch_size"] = gr.Number(1, label="Batch size", precision=0, elem_id="train_batch_size")
        inputs["gradient_step"] = gr.Number(1, label="Gradient accumulation steps", precision=0,
                                            elem_id="train_gradient_step")
    inputs["data_root"] = gr.Textbox(label="Dataset directory", placeholder="Path to directory with input images",
                                     elem_id="train_dataset_directory")
    inputs["log_directory"] = gr.Textbox("textual_inversion", label="Log directory",
                                         elem_id="train_log_directory")
    templates = template_names(services)
    inputs["template_filename"] = gr.Dropdown(templates, label="Prompt template", elem_id="train_template_file",
                                              value="style_filewords.txt" if "style_filewords.txt" in templates
                                              else (templates[0] if templates else None))
    inputs["training_width"] = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id="train_training_width")
    inputs["training_height"] = gr.Slider(64, 2048, value=512, step=8, label="Height",
                                          elem_id="train_training_height")
    inputs["varsize"] = gr.Checkbox(False, label="Do not resize images", elem_id="train_varsize")
    inputs["steps"] = gr.Number(100000, label="Max steps", precision=0, elem_id="train_steps")
    with gr.Row():
        inputs["save_embedding_every"] = gr.Number(
            500, label="Save a copy of embedding to log directory every N steps, 0 to disable", precision=0,
            elem_id="train_save_embedding_every")
    inputs["use_weight"] = gr.Checkbox(False, label="Use PNG alpha channel as loss weight", elem_id="use_weight")
    inputs["shuffle_tags"] = gr.Checkbox(False, label="Shuffle tags by ',' when creating prompts.",
                                         elem_id="train_shuffle_tags")
    inputs["tag_drop_out"] = gr.Slider(0, 1, value=0, step=0.1, label="Drop out tags when creating prompts.",
                                       elem_id="train_tag_drop_out")
    inputs["latent_sampling_method"] = gr.Radio(["once", "deterministic", "random"], value="once",
                                                label="Choose latent sampling method",
                                                elem_id="train_latent_sampling_method")
    with gr.Row():
        interrupt = gr.Button("Interrupt", elem_id="train_interrupt_training")
        button = gr.Button("Train Embedding", variant="primary", elem_id="train_train_embedding")
    return {"inputs": inputs, "button": button, "interrupt": interrupt, "refresh": refresh, "embedding": embedding}
