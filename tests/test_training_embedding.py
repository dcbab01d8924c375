"""Textual-inversion training (issue 22): Create embedding and Train embedding through A1111's API routes on a tiny
SD1 checkpoint — the file A1111's layout and our loader read, its vectors from the init text, the loss going down
on a dataset the model can overfit, the trained embedding changing the generated image, an interrupted training
saved and resumed to exactly the weights of an uninterrupted one, and bad requests refused before any step."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from modules import cmd_args, services as services_module
from modules.networks.textual_inversion import load_embedding, token_embedding_module
from modules.training import dataset as datasets
from modules.training.denoising import denoising_loss, encode, step_generator, training_scheduler
from modules.training.requests import TrainEmbeddingRequest
from modules.training.text_conditioning import TrainingTextEncoder
from modules.training.textual_inversion import TrainingFolders, train_embedding
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.training_jobs import StopsAt, interrupt_a_running_training

SMALL = {"training_width": 64, "training_height": 64, "create_image_every": 0, "save_embedding_every": 0,
         "template_filename": "subject_filewords.txt", "learn_rate": "0.05", "latent_sampling_method": "deterministic"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("training"), {"tiny.safetensors": build_tiny_model("sd1")})
    dataset = data / "dataset"
    dataset.mkdir()
    rng = np.random.default_rng(0)
    for index, caption in enumerate(["a red square", "a red circle"]):
        pixels = (rng.random((64, 64, 3)) * 60 + [180, 20, 20]).astype(np.uint8)
        Image.fromarray(pixels).save(dataset / f"{index:02d}.png")
        (dataset / f"{index:02d}.txt").write_text(caption)
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as test_client:
        test_client.services, test_client.data, test_client.dataset = services, data, dataset
        yield test_client
    services.shutdown()


def create(client, name: str, **fields):
    return client.post("/sdapi/v1/create/embedding", json={"name": name, **fields})


def train(client, name: str, **fields):
    return client.post("/sdapi/v1/train/embedding",
                       json={"embedding_name": name, "data_root": str(client.dataset), **SMALL, **fields})


def model(client):
    return client.services.generator.load(None)


def test_create_embedding_writes_a1111s_file_from_the_init_text(client):
    answer = create(client, "redthing", num_vectors_per_token=3, init_text="red apple")
    assert answer.status_code == 200, answer.text
    path = client.services.paths.embeddings / "redthing.pt"
    assert answer.json() == {"info": f"create embedding filename: {path}"}
    raw = torch.load(path, weights_only=True)   # A1111's layout, readable without unpickling code
    assert set(raw) >= {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint_name"}
    assert raw["step"] == 0 and raw["name"] == "redthing"
    embedding = load_embedding(path)
    pipe = model(client).pipeline
    layer = token_embedding_module(pipe.text_encoder)
    ids = pipe.tokenizer("red apple", add_special_tokens=False).input_ids
    assert embedding.vectors_for("").shape == (3, layer.embedding_dim)
    # A1111 spreads the init text's token embeddings over the vectors (vector i takes token i·tokens/count)
    expected = [ids[index * len(ids) // 3] for index in range(3)]
    assert torch.equal(embedding.vectors_for(""), layer.weight[expected].detach().float())
    listed = client.get("/sdapi/v1/embeddings").json()
    assert listed["loaded"]["redthing"]["vectors"] == 3 and listed["loaded"]["redthing"]["step"] == 0


def test_create_embedding_keeps_an_existing_file_unless_told(client):
    assert create(client, "keepme", init_text="").status_code == 200
    path = client.services.paths.embeddings / "keepme.pt"
    before = path.read_bytes()
    refused = create(client, "keepme", init_text="blue")
    assert refused.status_code == 422 and "already exists" in refused.text and path.read_bytes() == before
    assert torch.count_nonzero(load_embedding(path).vectors_for("")) == 0   # an empty init text: zeros
    assert create(client, "keepme", init_text="blue", overwrite_old=True).status_code == 200
    assert path.read_bytes() != before
    assert create(client, "???").status_code == 422   # nothing usable in the name


@pytest.mark.parametrize("fields, named", [
    ({"learn_rate": "0.005:abc"}, "learn_rate"), ({"clip_grad_value": ""}, "clip_grad_value"),
    ({"batch_size": 0}, "batch_size"), ({"training_width": 60}, "training_width"),
    ({"latent_sampling_method": "sometimes"}, "latent_sampling_method"),
    ({"template_filename": "../secrets.txt"}, "template_filename"), ({"steps": 0}, "steps"),
    ({"preview_from_txt2img": True, "create_image_every": 5, "preview_sampler_name": "Bogus"},
     "preview_sampler_name"),
])
def test_bad_fields_are_refused_naming_them(client, fields, named):
    answer = train(client, "anything", **fields)
    assert answer.status_code == 422 and named in answer.text


def test_a_training_that_cannot_start_writes_nothing(client, tmp_path):
    assert create(client, "untouched", init_text="cat").status_code == 200
    path = client.services.paths.embeddings / "untouched.pt"
    before = path.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    for fields, words in (({"data_root": str(tmp_path / "missing")}, "missing"), ({"data_root": str(empty)}, "empty"),
                          ({"template_filename": "no_such_template.txt"}, "no_such_template.txt")):
        answer = train(client, "untouched", steps=2, **fields)
        assert answer.status_code == 422 and words in answer.text, answer.text
    answer = train(client, "never-created", steps=2)
    assert answer.status_code == 422 and "never-created" in answer.text
    assert path.read_bytes() == before and not (client.services.paths.embeddings / "untouched.pt.optim").exists()
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64}
                       ).status_code == 200   # the server goes on


def _fixed_loss(client, path) -> float:
    """The loss of the dataset's images under fixed draws: what training lowers."""
    loaded = model(client)
    pipe, embedding = loaded.pipeline, load_embedding(path)
    entries = datasets.read_dataset(client.dataset, width=64, height=64)
    encoder = TrainingTextEncoder(pipe, loaded.spec.family, embeddings={embedding.name: embedding})
    scheduler = training_scheduler(loaded.scheduler_config)
    with torch.no_grad():
        latents = torch.stack([encode(pipe.vae, entry.pixels).mean for entry in entries])
        cond = encoder.encode_batch([f"a photo of a {embedding.name}, {entry.filename_text}" for entry in entries])
        return sum(float(denoising_loss(pipe.unet, scheduler, latents, cond, step_generator(1, draw)))
                   for draw in range(8))


def test_training_lowers_the_loss_and_changes_the_image(client):
    assert create(client, "overfit", num_vectors_per_token=2, init_text="thing").status_code == 200
    path = client.services.paths.embeddings / "overfit.pt"
    before_loss = _fixed_loss(client, path)
    txt2img = {"prompt": "a photo of overfit", "steps": 2, "width": 64, "height": 64, "seed": 5}
    before_image = client.post("/sdapi/v1/txt2img", json=txt2img).json()["images"][0]
    answer = train(client, "overfit", steps=30, batch_size=2, seed=3, save_embedding_every=10, create_image_every=15)
    assert answer.status_code == 200, answer.text
    assert answer.json()["info"] == f"train embedding complete: filename: {path} error: None"
    trained = load_embedding(path)
    assert trained.step == 30 and (client.services.paths.embeddings / "overfit.pt.optim").exists()
    assert _fixed_loss(client, path) < before_loss
    assert client.post("/sdapi/v1/txt2img", json=txt2img).json()["images"][0] != before_image
    logs = list((client.data / "textual_inversion").glob("*/overfit"))
    assert len(logs) == 1
    assert sorted(p.name for p in (logs[0] / "embeddings").iterdir() if p.suffix == ".pt") == [
        "overfit-10.pt", "overfit-20.pt", "overfit-30.pt"]
    assert load_embedding(logs[0] / "embeddings" / "overfit-20.pt").step == 20
    # previews every 15 steps from the batch's training prompt, with the embedding learnt so far, infotext inside
    shots = sorted(p.name for p in (logs[0] / "images").iterdir())
    assert shots == ["overfit-15.png", "overfit-30.png"]
    shot = Image.open(logs[0] / "images" / "overfit-30.png")
    assert shot.size == (64, 64) and "overfit" in shot.info["parameters"] and "Steps: 20" in shot.info["parameters"]
    rows = (logs[0] / "textual_inversion_loss.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,epoch_step,loss,learn_rate" and len(rows) == 31
    # trained beyond the asked steps: nothing more to do, the file stays
    kept = path.read_bytes()
    assert train(client, "overfit", steps=30).status_code == 200 and path.read_bytes() == kept




def test_previews_after_a_save_carry_that_embedding_in_a_png(client):
    """A1111's "Save images with embedding in PNG chunks": the first preview after each `<name>-<step>.pt` is also
    written, captioned, with that embedding inside; the PNG works as the embedding when put in the embeddings
    folder."""
    import base64
    import json

    from modules.training.embedding_image import caption_image

    assert create(client, "pngthing", num_vectors_per_token=2, init_text="cat").status_code == 200
    answer = train(client, "pngthing", steps=8, save_embedding_every=3, create_image_every=2)
    assert answer.status_code == 200, answer.text
    (log,) = (client.data / "textual_inversion").glob("*/pngthing")
    assert sorted(p.name for p in (log / "images").iterdir()) == [f"pngthing-{step}.png" for step in (2, 4, 6, 8)]
    # step 2: nothing saved yet; 4: carries the step-3 save; 6: the step-6 save; 8: that one is in an image already
    assert sorted(p.name for p in (log / "image_embeddings").iterdir()) == ["pngthing-4.png", "pngthing-6.png"]
    png = log / "image_embeddings" / "pngthing-4.png"
    from_png, saved = load_embedding(png), load_embedding(log / "embeddings" / "pngthing-3.pt")
    assert from_png.name == "pngthing-3" and from_png.step == 3
    assert torch.equal(from_png.vectors_for(""), saved.vectors_for(""))
    assert torch.equal(load_embedding(log / "image_embeddings" / "pngthing-6.png").vectors_for(""),
                       load_embedding(log / "embeddings" / "pngthing-6.pt").vectors_for(""))
    final = load_embedding(client.services.paths.embeddings / "pngthing.pt")
    assert final.step == 8 and not torch.equal(final.vectors_for(""), from_png.vectors_for(""))
    # A1111's reader: base64 of JSON, tensors as {"TORCHTENSOR": [[...]]}
    image = Image.open(png)
    data = json.loads(base64.b64decode(image.info["sd-ti-embedding"]))
    assert torch.equal(torch.tensor(data["string_to_param"]["*"]["TORCHTENSOR"]), saved.vectors_for(""))
    # the preview under A1111's caption: same size, shaded to black at the top edge, and text drawn on it
    preview = Image.open(log / "images" / "pngthing-4.png")
    captioned = np.asarray(image.convert("RGB"))
    assert image.size == preview.size and not captioned[0].any()
    assert not np.array_equal(captioned, np.asarray(caption_image(preview, "", "", "", "")))

    shutil.copy(png, client.services.paths.embeddings / "pngthing-4.png")
    listed = client.get("/sdapi/v1/embeddings").json()
    assert listed["loaded"]["pngthing-3"]["step"] == 3 and listed["loaded"]["pngthing-3"]["vectors"] == 2


def test_no_embedding_images_when_the_option_is_off(client):
    assert create(client, "plainpng", init_text="cat").status_code == 200
    answer = train(client, "plainpng", steps=1, save_embedding_every=1, create_image_every=1,
                   save_image_with_stored_embedding=False)
    assert answer.status_code == 200, answer.text
    (log,) = (client.data / "textual_inversion").glob("*/plainpng")
    assert (log / "images" / "plainpng-1.png").exists() and not (log / "image_embeddings").exists()


def test_a_full_disk_leaves_no_partial_embedding_image(tmp_path, monkeypatch):
    from modules.jobs import StorageFull
    from modules.networks.textual_inversion import Embedding
    from modules.training.embedding_image import save_embedding_image

    embedding = Embedding(name="full-4", vectors={"": torch.ones(1, 8)}, path=tmp_path / "full-4.pt", step=4)
    preview = Image.new("RGB", (64, 64), (90, 120, 200))
    kept = save_embedding_image(preview, embedding, tmp_path, "full", 4)
    before = kept.read_bytes()

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", disk_full)
    with pytest.raises(StorageFull, match="full-4.png"):
        save_embedding_image(preview, Embedding(name="full-4", vectors={"": torch.zeros(1, 8)}, path=kept),
                             tmp_path, "full", 4)
    assert kept.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["full-4.png"]


def test_interrupt_then_resume_ends_with_an_uninterrupted_runs_weights(client):
    services = client.services
    assert create(client, "resumed", num_vectors_per_token=2, init_text="dog").status_code == 200
    path = services.paths.embeddings / "resumed.pt"
    initial = client.data / "resumed-initial.pt"
    shutil.copy(path, initial)
    folders = TrainingFolders(embeddings=services.paths.embeddings, templates=services.paths.training_templates,
                              log_root=client.data)
    # shuffled tags and "random" latent sampling: the draws of the resumed steps must be the same as well
    request = TrainEmbeddingRequest(embedding_name="resumed", data_root=str(client.dataset), steps=6, seed=11,
                                    **{**SMALL, "learn_rate": "0.02:3, 0.01", "latent_sampling_method": "random",
                                       "shuffle_tags": True})
    loaded = model(client)
    straight = train_embedding(request, model=loaded, folders=folders, job=StopsAt(10 ** 9))
    assert straight.step == 6 and not straight.interrupted
    uninterrupted = load_embedding(path).vectors_for("").clone()   # not a view of the file (mmap)

    shutil.copy(initial, path)
    state = path.with_name("resumed.pt.optim")
    state.unlink()
    stopped = train_embedding(request, model=loaded, folders=folders, job=StopsAt(4))
    assert stopped.interrupted and stopped.step == 4 and load_embedding(path).step == 4 and state.exists()
    resumed = train_embedding(request, model=loaded, folders=folders, job=StopsAt(10 ** 9))
    assert resumed.step == 6 and [step for step, _ in resumed.losses] == [5, 6]
    assert stopped.losses + resumed.losses == straight.losses   # the same draws, step for step
    assert torch.equal(load_embedding(path).vectors_for(""), uninterrupted)
    assert not torch.equal(load_embedding(initial).vectors_for(""), uninterrupted)


def test_interrupt_through_the_api_saves_a_resumable_embedding(client):
    assert create(client, "stopped", init_text="cat").status_code == 200
    progress = interrupt_a_running_training(client, "train-embedding", lambda: train(client, "stopped", steps=100_000))
    assert "Training textual inversion" in progress["textinfo"] and progress["eta_relative"] > 0, progress
    saved = load_embedding(client.services.paths.embeddings / "stopped.pt")
    assert 1 <= saved.step < 100_000 and (client.services.paths.embeddings / "stopped.pt.optim").exists()


def test_the_train_tab_creates_and_trains_with_a_loss_chart(client):
    import asyncio

    import gradio as gr

    from modules.ui import create_ui
    from modules.ui.train import run_create_embedding, run_prepare, run_train_embedding

    services = client.services
    demo = create_ui(services)
    config = demo.get_config_file()
    ids = {component["props"].get("elem_id") for component in config["components"]}
    assert {"tab_train", "train_process_src", "train_preprocess", "train_new_embedding_name", "train_create_embedding",
            "train_embedding", "train_dataset_directory", "train_train_embedding", "train_interrupt_training",
            "ti_loss_chart", "train_new_hypernetwork_name", "train_create_hypernetwork", "train_hypernetwork",
            "train_train_hypernetwork", "train_lora_name", "train_train_lora", "train_controlnet_name",
            "train_train_controlnet", "ti_gallery"} <= ids
    # previews "read from the txt2img tab" take that tab's values: its fields are the Train button's inputs too
    by_elem_id = {component["props"].get("elem_id"): component["id"] for component in config["components"]}
    train_click = next(dependency for dependency in config["dependencies"]
                       if [by_elem_id["train_train_embedding"], "click"] in [list(t) for t in dependency["targets"]])
    assert {by_elem_id[name] for name in ("txt2img_prompt", "txt2img_neg_prompt", "txt2img_steps", "txt2img_seed",
                                          "txt2img_width", "txt2img_cfg_scale")} <= set(train_click["inputs"])
    # every click goes to the job queue at once (a second page's training is queued there, with its own job id)
    for button in ("train_train_embedding", "train_train_lora", "train_train_controlnet"):
        click = next(function for function in demo.fns.values()
                     if (by_elem_id[button], "click") in [tuple(target) for target in function.targets])
        assert click.concurrency_limit is None, (button, click.concurrency_limit)

    prepared = asyncio.run(run_prepare(services, {"source_folder": str(client.dataset), "width": 64, "height": 64,
                                                  "destination_folder": str(client.data / "prepared"),
                                                  "flip": True, "existing_caption": "copy"}))
    assert "Prepared 4 image(s)" in prepared and len(list((client.data / "prepared").glob("*.txt"))) == 4
    created = asyncio.run(run_create_embedding(services, {"name": "fromtab", "init_text": "dog",
                                                          "num_vectors_per_token": 1, "overwrite_old": False}))
    assert "Created" in created and (services.paths.embeddings / "fromtab.pt").exists()

    async def follow(values):
        return [update async for update in run_train_embedding(services, values)]

    values = {"embedding_name": "fromtab", "data_root": str(client.dataset), "steps": 4, **SMALL,
              "create_image_every": 2}
    updates = asyncio.run(follow(values))
    status, chart, gallery, job_id = updates[-1]
    assert "Training finished at step 4" in status and services.queue.get(job_id).kind == "train-embedding"
    assert chart.size == (640, 260) and len(set(chart.getdata())) > 2   # a drawn line, not an empty chart
    # every preview in the gallery, however the polls fell
    assert [caption for _, caption in gallery] == ["step 2", "step 4"] and gallery[0][0].size == (64, 64)
    with pytest.raises(gr.Error, match="learn_rate"):
        asyncio.run(follow({**values, "learn_rate": "fast"}))


def test_every_train_tab_field_is_a_field_of_its_request(client):
    """Each form sends its inputs by name into its request model (which forbids unknown names): a field renamed on
    one side only would fail every click."""
    import gradio as gr

    from modules.training.controlnet_training import TrainControlNetRequest
    from modules.training.lora_requests import TrainLoraRequest
    from modules.training.preprocess import PreprocessRequest
    from modules.training.requests import (CreateEmbeddingRequest, CreateHypernetworkRequest,
                                           TrainHypernetworkRequest)
    from modules.ui import train_forms

    services = client.services
    with gr.Blocks():
        train = train_forms.train_form(services)
        forms = [(train_forms.prepare_form(), PreprocessRequest),
                 (train_forms.create_embedding_form(), CreateEmbeddingRequest),
                 (train_forms.create_hypernetwork_form(), CreateHypernetworkRequest),
                 (train["embedding"], TrainEmbeddingRequest), (train["hypernetwork"], TrainHypernetworkRequest),
                 (train_forms.train_lora_form(), TrainLoraRequest),
                 (train_forms.train_controlnet_form(services), TrainControlNetRequest)]
    for form, model in forms:
        assert set(form["inputs"]) <= set(model.model_fields), (model.__name__, set(form["inputs"]) - set(
            model.model_fields))
    assert {"save_image_with_stored_embedding", "preview_from_txt2img"} <= set(train["embedding"]["inputs"])
    assert {"preview_every", "preview_prompt"} <= set(forms[-1][0]["inputs"])


def test_the_train_tabs_interrupt_stops_its_own_training_not_another_clients_job(client):
    import threading

    from modules.ui.train import interrupt_training

    queue, release = client.services.queue, threading.Event()
    other = queue.submit("train-lora", lambda job: release.wait(30))   # another page's training, running
    try:
        assert _wait_until(lambda: queue.current is other)
        interrupt_training(client.services, None)          # this page knows no training of its own: nothing stops
        assert not other.interrupted
        training = queue.submit("train-embedding", lambda job: None)   # queued behind it
        interrupt_training(client.services, training.id)
        assert training.interrupted and not other.interrupted and training.state == "cancelled"
    finally:
        release.set()
    assert other.done.wait(30) and other.state == "done"


def _wait_until(condition, seconds: float = 10.0) -> bool:
    import time

    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_loss_chart_draws_every_step_done_while_the_training_runs(client):
    """The live chart follows the trainer's own (step, loss) list, not the polls: steps done between two looks are
    on it too."""
    import asyncio
    import threading

    from modules.training.common import TrainingResult
    from modules.training.loss_chart import loss_chart
    from modules.ui.train import follow_training

    release = threading.Event()

    def run(job):
        job.partial_result = TrainingResult("embedding", "live", client.data / "live.pt", 0, None)
        job.partial_result.losses.extend((step, 1.0 / step) for step in range(1, 30))
        release.wait(30)
        return None

    job = client.services.queue.submit("train-embedding", run)

    async def first_charts():
        charts = []
        async for _status, chart, _preview in follow_training(client.services, job):
            charts.append(chart)
            if len(charts) == 2:
                release.set()
        return charts

    charts = asyncio.run(first_charts())
    assert list(charts[1].getdata()) == list(loss_chart([(step, 1.0 / step) for step in range(1, 30)]).getdata())
    assert list(charts[0].getdata()) != list(charts[1].getdata())


def test_a_batch_of_prompts_encodes_as_each_prompt_alone(client):
    """Training encodes a batch's captions together; each row equals that caption encoded on its own (emphasis,
    a prompt over 75 tokens padded against a short one, an embedding's vectors)."""
    from modules.prompts.conditioning import TextEncoder

    assert create(client, "rowthing", init_text="dog", num_vectors_per_token=2).status_code == 200
    loaded = model(client)
    embedding = load_embedding(client.services.paths.embeddings / "rowthing.pt")
    texts = ["a (red:1.3) rowthing, [blue] sky", "plain words " * 40, "rowthing"]
    for clip_skip in (1, 2):
        batched = TrainingTextEncoder(loaded.pipeline, loaded.spec.family, clip_skip=clip_skip,
                                      embeddings={"rowthing": embedding}).encode_batch(texts)
        alone = TextEncoder(loaded.pipeline, loaded.spec.family, clip_skip=clip_skip,
                            embeddings={"rowthing": embedding})
        expected = torch.cat([alone.encode(text, min_chunks=2).embeds for text in texts])
        assert batched.shape == expected.shape == (3, 154, expected.shape[-1])
        assert torch.allclose(batched, expected, atol=1e-5)


def test_interrupt_during_a_preview_stops_the_preview_within_a_step(client):
    """The training's Interrupt reaches the preview being generated (an inner job): a 150-step preview stops at
    once, nothing half-made is saved, and the embedding is saved at the step it reached."""
    from modules.training import runs

    assert create(client, "stopsinpreview", init_text="cat").status_code == 200
    request = TrainEmbeddingRequest(embedding_name="stopsinpreview", data_root=str(client.dataset), steps=5,
                                    **{**SMALL, "create_image_every": 1, "preview_from_txt2img": True,
                                       "preview_prompt": "a slow preview", "preview_steps": 150,
                                       "preview_width": 64, "preview_height": 64})
    services = client.services
    folders = TrainingFolders(embeddings=services.paths.embeddings, templates=services.paths.training_templates,
                              log_root=client.data)
    calls = []
    hook = model(client).pipeline.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        # Interrupt is pressed once step 1 is done: while its preview is being generated
        result = train_embedding(request, model=model(client), folders=folders, job=StopsAt(stop_at=1),
                                 generate=runs.preview_generator(services))
    finally:
        hook.remove()
    assert result.interrupted and result.step == 1 and result.previews == []
    assert len(calls) < 10, len(calls)   # the training step's, not the preview's 150 steps
    assert load_embedding(services.paths.embeddings / "stopsinpreview.pt").step == 1


def test_a_template_without_name_is_refused_before_any_step(client):
    """A prompt without [name] never holds the embedding (no gradient): refused naming the template, not a 500."""
    assert create(client, "nameless", init_text="cat").status_code == 200
    answer = train(client, "nameless", steps=2, template_filename="none.txt")
    assert answer.status_code == 422 and "none.txt" in answer.text and "[name]" in answer.text, answer.text
    assert load_embedding(client.services.paths.embeddings / "nameless.pt").step in (0, None)
