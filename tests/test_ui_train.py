"""The Train tab's handlers (issue 22) on a tiny SD1 checkpoint, called as the page calls them: a LoRA form left at
its defaults trains (the text fields of its closed accordion arrive as None), a click first empties the last run's
message, no embedding or hypernetwork chosen is said in words, the prompt-template 🔄 re-lists the folder, and the
final message tells a resumed training and one with nothing left to do."""
from __future__ import annotations

import asyncio
import html
import shutil

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, services as services_module
from modules.paths import PROJECT_ROOT
from modules.training.common import TrainingResult
from modules.training.lora_requests import TrainLoraRequest
from modules.ui import train, train_forms
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model

TRAINING_OUTPUTS = 4   # status, loss chart, previews, the job id


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("train_ui"), {"tiny.safetensors": build_tiny_model("sd1")})
    templates = data / "templates"
    shutil.copytree(PROJECT_ROOT / "textual_inversion_templates", templates)
    dataset = data / "dataset"
    dataset.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(dataset / f"{index}.png")
        (dataset / f"{index}.txt").write_text("a speckled tile")
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui",
                                                        "--textual-inversion-templates-dir", str(templates)]))
    built.data, built.dataset = data, dataset
    yield built
    built.shutdown()


def defaults(form: dict) -> dict:
    return {name: component.value for name, component in form["inputs"].items()}


async def clicked(services, form: dict, run, values: dict, outputs: int = TRAINING_OUTPUTS) -> list:
    """The updates a click on the form's button yields, `values` as the page sends them."""
    handler = train.form_handler(services, form, run, outputs)
    return [update async for update in handler(*(values[name] for name in form["inputs"]))]


def test_a_lora_form_left_at_its_defaults_trains(services):
    with gr.Blocks():
        form = train_forms.train_lora_form()
    values = {**defaults(form), "name": "tile", "data_root": str(services.dataset), "resolution": 64, "steps": 2}
    # the page never drew the closed "DreamBooth: prior preservation" accordion: its text fields arrive as None
    values.update(class_data_root=None, class_prompt=None)
    assert form["inputs"]["alpha"].value == 0 and "0: the rank" in form["inputs"]["alpha"].label
    updates = asyncio.run(clicked(services, form, train.run_train_lora, values))
    status = updates[-1][0]
    assert "Training finished at step 2" in status, status
    assert (services.paths.lora / "tile.safetensors").exists()
    # the same again: nothing left to train, said as such; "Start afresh" trains it anew
    again = html.unescape(asyncio.run(clicked(services, form, train.run_train_lora, values))[-1][0])
    assert "'tile' has already been trained to step 2: raise Steps to train on" in again, again
    onward = asyncio.run(clicked(services, form, train.run_train_lora, {**values, "steps": 3}))[-1][0]
    assert "Resumed from step 2; training finished at step 3" in onward, onward
    anew = asyncio.run(clicked(services, form, train.run_train_lora, {**values, "overwrite": True}))[-1][0]
    assert "Training finished at step 2" in anew and "Resumed" not in anew, anew


def test_every_text_field_the_page_never_drew_is_sent_as_empty_text(services):
    with gr.Blocks():
        trains = train_forms.train_form(services)
        forms = [train_forms.prepare_form(), train_forms.create_embedding_form(), train_forms.create_hypernetwork_form(),
                 trains["embedding"], trains["hypernetwork"], train_forms.train_lora_form(),
                 train_forms.train_controlnet_form(services)]
    for form in forms:
        texts = train.text_inputs(form["inputs"])
        sent = train.form_values(form["inputs"], [None] * len(form["inputs"]), texts)
        assert all(sent[name] == "" for name in texts)
        assert all(sent[name] is None for name in set(form["inputs"]) - texts)   # numbers, checkboxes: as sent
    lora = forms[5]["inputs"]
    assert {"name", "data_root", "class_data_root", "class_prompt", "optimizer", "target"} <= train.text_inputs(lora)
    assert "captioners" not in train.text_inputs(forms[0]["inputs"])   # a list of choices, not one string
    values = train.form_values(lora, [None if name in ("class_data_root", "class_prompt") else component.value
                                      for name, component in lora.items()], train.text_inputs(lora))
    request = TrainLoraRequest(**{**values, "name": "x", "data_root": "d"})
    assert request.class_data_root == "" and request.network_alpha == request.rank   # alpha 0: the rank


@pytest.mark.parametrize("form_name, run, told", [
    ("embedding", train.run_train_embedding, "Choose an embedding to train (create one under Create embedding)"),
    ("hypernetwork", train.run_train_hypernetwork,
     "Choose a hypernetwork to train (create one under Create hypernetwork)"),
])
def test_a_click_empties_the_last_message_and_no_choice_is_said_in_words(services, form_name, run, told):
    with gr.Blocks():
        form = train_forms.train_form(services)[form_name]
    values = {**defaults(form), "data_root": str(services.dataset), f"{form_name}_name": None}
    handler = train.form_handler(services, form, run, TRAINING_OUTPUTS)

    async def updates_then_error():
        seen = []
        with pytest.raises(gr.Error) as raised:
            async for update in handler(*(values[name] for name in form["inputs"])):
                seen.append(update)
        return seen, raised.value

    seen, error = asyncio.run(updates_then_error())
    assert len(seen) == 1 and seen[0][0] == ""   # the old outcome is gone before the error's toast
    assert error.message == told


def test_the_prompt_template_refresh_button_relists_the_folder(services):
    with gr.Blocks() as demo:
        train.create_tab(services)
    button = next(block for block in demo.blocks.values() if block.elem_id == "refrsh_train_template_file")
    dropdown = next(block for block in demo.blocks.values() if block.elem_id == "train_template_file")
    assert "mine.txt" not in [value for _, value in dropdown.choices]
    (services.paths.training_templates / "mine.txt").write_text("a photo of [name]\n")
    refresh = next(function for function in demo.fns.values() if (button._id, "click") in function.targets)
    assert [block._id for block in refresh.outputs] == [dropdown._id]
    assert "mine.txt" in refresh.fn()["choices"]


def test_prepares_existing_caption_offers_a1111s_four_actions():
    with gr.Blocks():
        action = train_forms.prepare_form()["inputs"]["existing_caption"]
    assert [value for _, value in action.choices] == ["ignore", "copy", "prepend", "append"]
    assert action.value == "ignore" and action.elem_id == "train_preprocess_txt_action"


def finished_message(services, result: TrainingResult) -> str:
    job = services.queue.submit("train-lora", lambda job: result)

    async def last():
        return [update async for update in train.follow_training(services, job)][-1][0]

    return html.unescape(asyncio.run(last()))


def test_the_message_tells_a_resumed_training_and_one_already_trained(services):
    fresh = TrainingResult("lora", "fresh", services.data / "fresh.safetensors", 0, None)
    fresh.step, fresh.losses = 2, [(1, 0.5), (2, 0.4)]
    assert "Training finished at step 2" in finished_message(services, fresh)
    assert "Resumed" not in finished_message(services, fresh)

    resumed = TrainingResult("embedding", "tile", services.data / "tile.pt", 4, None)   # began at a saved step 4
    resumed.step, resumed.losses = 6, [(5, 0.5), (6, 0.4)]
    assert "Resumed from step 4; training finished at step 6" in finished_message(services, resumed)

    done = TrainingResult("embedding", "tile", services.data / "tile.pt", 6, None)   # nothing left: no step ran
    message = finished_message(services, done)
    assert "'tile' has already been trained to step 6: raise Max steps to train on" in message
    assert "warning" in message and "finished" not in message
    lora_done = TrainingResult("lora", "tile", services.data / "tile.safetensors", 6, None)
    assert "raise Steps to train on" in finished_message(services, lora_done)

    stopped = TrainingResult("lora", "tile", services.data / "tile.safetensors", 4, None, interrupted=True)
    stopped.step = 5
    assert "Resumed from step 4; Interrupted at step 5" in finished_message(services, stopped)
