"""Hypernetwork training (issue 22): Create hypernetwork and Train hypernetwork through A1111's API routes on a tiny
SD1 checkpoint — the file in A1111's layout with the requested structure, which our loader reads and the list
shows; the loss going down on a dataset the model can overfit and `<hypernet:name>` changing the image; an
interrupted training saved and resumed to exactly the weights of an uninterrupted one (dropout included); bad
requests refused naming the field, and a training that cannot start writing nothing."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from modules import cmd_args, services as services_module
from modules.networks.hypernetwork import HypernetworkCache, HypernetworkInfo, applied, load_hypernetwork
from modules.training import dataset as datasets
from modules.training.common import TrainingFolders
from modules.training.denoising import denoising_loss, encode, step_generator, training_scheduler
from modules.training.hypernetwork import train_hypernetwork
from modules.training.requests import TrainHypernetworkRequest
from modules.training.text_conditioning import TrainingTextEncoder
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_hypernetworks import MISFIT_WIDTH, SD1_CONTEXT_WIDTH, write_hypernetwork
from tests.fixtures.training_jobs import StopsAt, interrupt_a_running_training

SMALL = {"training_width": 64, "training_height": 64, "create_image_every": 0, "save_hypernetwork_every": 0,
         "learn_rate": "0.005", "latent_sampling_method": "deterministic"}
CAPTIONS = ["a red square", "a red circle"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("training"), {"tiny.safetensors": build_tiny_model("sd1")})
    dataset = data / "dataset"
    dataset.mkdir()
    rng = np.random.default_rng(0)
    for index, caption in enumerate(CAPTIONS):
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
    return client.post("/sdapi/v1/create/hypernetwork",
                       json={"name": name, "enable_sizes": [SD1_CONTEXT_WIDTH], **fields})


def train(client, name: str, **fields):
    return client.post("/sdapi/v1/train/hypernetwork",
                       json={"hypernetwork_name": name, "data_root": str(client.dataset), **SMALL, **fields})


def folder(client):
    return client.services.paths.hypernetworks


def test_create_writes_a1111s_file_with_the_requested_structure(client):
    answer = create(client, "deep", enable_sizes=[SD1_CONTEXT_WIDTH, 64], layer_structure="1, 2, 1.5, 1",
                    activation_func="relu", weight_init="KaimingNormal", add_layer_norm=True, use_dropout=True,
                    dropout_structure="0, 0.1, 0.2, 0")
    assert answer.status_code == 200, answer.text
    path = folder(client) / "deep.pt"
    assert answer.json() == {"info": f"create hypernetwork filename: {path}"}
    raw = torch.load(path, weights_only=True)   # A1111's layout, readable without unpickling code
    assert [key for key in raw if isinstance(key, int)] == [SD1_CONTEXT_WIDTH, 64]
    assert raw["step"] == 0 and raw["name"] == "deep" and raw["layer_structure"] == [1.0, 2.0, 1.5, 1.0]
    assert raw["activation_func"] == "relu" and raw["is_layer_norm"] is True and raw["use_dropout"] is True
    assert raw["weight_initialization"] == "KaimingNormal" and raw["dropout_structure"] == [0.0, 0.1, 0.2, 0.0]
    assert raw["last_layer_dropout"] is True and raw["activate_output"] is False
    keys, values = raw[64]
    # Linear 64→128, ReLU, LayerNorm, Dropout | Linear 128→96, ReLU, LayerNorm, Dropout | Linear 96→64, LayerNorm
    assert keys["linear.0.weight"].shape == (128, 64) and keys["linear.4.weight"].shape == (96, 128)
    assert keys["linear.8.weight"].shape == (64, 96) and keys["linear.9.weight"].shape == (64,)
    assert torch.count_nonzero(keys["linear.0.bias"]) == 0 and keys["linear.0.weight"].std() > 0.05   # Kaiming
    assert not torch.equal(keys["linear.0.weight"], values["linear.0.weight"])
    loaded = load_hypernetwork(path)
    assert loaded.widths == [SD1_CONTEXT_WIDTH, 64] and loaded.dropout_structure == (0.0, 0.1, 0.2, 0.0)
    assert {"name": "deep", "path": str(path.resolve())} in client.get("/sdapi/v1/hypernetworks").json()


def test_create_keeps_an_existing_file_unless_told(client):
    assert create(client, "keepme").status_code == 200
    path = folder(client) / "keepme.pt"
    before = path.read_bytes()
    refused = create(client, "keepme")
    assert refused.status_code == 422 and "already exists" in refused.text and path.read_bytes() == before
    raw = torch.load(path, weights_only=True)   # the defaults: 1, 2, 1, linear, Normal init (near the identity)
    assert raw["layer_structure"] == [1.0, 2.0, 1.0] and raw["activation_func"] == "linear"
    assert raw[SD1_CONTEXT_WIDTH][0]["linear.0.weight"].abs().max() < 0.1
    assert create(client, "keepme", overwrite_old=True).status_code == 200 and path.read_bytes() != before


@pytest.mark.parametrize("fields, named", [
    ({"layer_structure": "2, 2, 1"}, "layer_structure"), ({"layer_structure": "1, 2"}, "layer_structure"),
    ({"layer_structure": "1, x, 1"}, "layer_structure"), ({"activation_func": "nonesuch"}, "activation_func"),
    ({"weight_init": "Gaussian"}, "weight_init"), ({"enable_sizes": []}, "enable_sizes"),
    ({"use_dropout": True, "dropout_structure": "0, 1, 0"}, "dropout_structure"), ({"name": "???"}, "name"),
])
def test_bad_create_fields_are_refused_naming_them(client, fields, named):
    answer = client.post("/sdapi/v1/create/hypernetwork", json={"name": "badfields", **fields})
    assert answer.status_code == 422 and named in answer.text, answer.text
    assert not (folder(client) / "badfields.pt").exists()


@pytest.mark.parametrize("fields, named", [
    ({"learn_rate": "0.005:abc"}, "learn_rate"), ({"batch_size": 0}, "batch_size"),
    ({"latent_sampling_method": "sometimes"}, "latent_sampling_method"),
    ({"template_filename": "../secrets.txt"}, "template_filename"),
    ({"save_embedding_every": 5}, "save_embedding_every"),   # the embedding's field: not one of these
])
def test_bad_train_fields_are_refused_naming_them(client, fields, named):
    answer = train(client, "anything", **fields)
    assert answer.status_code == 422 and named in answer.text, answer.text


def test_a_training_that_cannot_start_writes_nothing(client, tmp_path):
    assert create(client, "untouched").status_code == 200
    misfit = write_hypernetwork(folder(client) / "misfit.pt", widths=(MISFIT_WIDTH,))
    path = folder(client) / "untouched.pt"
    before, misfit_before = path.read_bytes(), misfit.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    for name, fields, words in (("untouched", {"data_root": str(tmp_path / "missing")}, "missing"),
                                ("untouched", {"data_root": str(empty)}, "empty"),
                                ("untouched", {"template_filename": "no_such_template.txt"}, "no_such_template.txt"),
                                ("never-created", {}, "never-created"), ("misfit", {}, str(MISFIT_WIDTH))):
        answer = train(client, name, steps=2, **fields)
        assert answer.status_code == 422 and words in answer.text, answer.text
    assert path.read_bytes() == before and misfit.read_bytes() == misfit_before
    assert not list(folder(client).glob("*.optim")) and not list(client.data.glob("textual_inversion/*/untouched"))
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64}
                       ).status_code == 200   # the server goes on


def _fixed_loss(client, path) -> float:
    """The loss of the dataset's images under fixed draws with the hypernetwork applied: what training lowers."""
    loaded = client.services.generator.load(None)
    pipe = loaded.pipeline
    entries = datasets.read_dataset(client.dataset, width=64, height=64)
    scheduler = training_scheduler(loaded.scheduler_config)
    with torch.no_grad(), applied(pipe, [(HypernetworkInfo(path.stem, path), 1.0)], HypernetworkCache()):
        latents = torch.stack([encode(pipe.vae, entry.pixels).mean for entry in entries])
        cond = TrainingTextEncoder(pipe, loaded.spec.family).encode_batch([entry.filename_text for entry in entries])
        return sum(float(denoising_loss(pipe.unet, scheduler, latents, cond, step_generator(1, draw)))
                   for draw in range(8))


def test_training_lowers_the_loss_and_changes_the_image(client):
    assert create(client, "overfit", activation_func="relu").status_code == 200
    path = folder(client) / "overfit.pt"
    before_loss = _fixed_loss(client, path)
    txt2img = {"prompt": "a red square <hypernet:overfit:1>", "steps": 2, "width": 64, "height": 64, "seed": 5}
    before_image = client.post("/sdapi/v1/txt2img", json=txt2img).json()["images"][0]
    answer = train(client, "overfit", steps=20, batch_size=2, seed=3, save_hypernetwork_every=10,
                   create_image_every=20)
    assert answer.status_code == 200, answer.text
    assert answer.json()["info"] == f"train hypernetwork complete: filename: {path} error: None"
    trained = load_hypernetwork(path)
    assert trained.metadata["step"] == 20 and trained.metadata["sd_checkpoint_name"] == "tiny"
    assert (folder(client) / "overfit.pt.optim").exists()
    assert _fixed_loss(client, path) < before_loss
    assert client.post("/sdapi/v1/txt2img", json=txt2img).json()["images"][0] != before_image
    logs = list((client.data / "textual_inversion").glob("*/overfit"))
    assert len(logs) == 1
    assert sorted(p.name for p in (logs[0] / "hypernetworks").iterdir()) == [
        "overfit-10.pt", "overfit-10.pt.optim", "overfit-20.pt", "overfit-20.pt.optim"]
    assert load_hypernetwork(logs[0] / "hypernetworks" / "overfit-10.pt").metadata["step"] == 10
    # a preview at step 20 with the modules being trained on the model, its infotext inside
    from PIL import Image

    assert sorted(p.name for p in (logs[0] / "images").iterdir()) == ["overfit-20.png"]
    assert "Steps: 20" in Image.open(logs[0] / "images" / "overfit-20.png").info["parameters"]
    rows = (logs[0] / "hypernetwork_loss.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,epoch_step,loss,learn_rate" and len(rows) == 21
    kept = path.read_bytes()   # trained beyond the asked steps: nothing more to do, the file stays
    assert train(client, "overfit", steps=20).status_code == 200 and path.read_bytes() == kept




def _weights(path) -> dict:
    raw = torch.load(path, weights_only=True)
    return {(width, side, key): value for width in raw if isinstance(width, int)
            for side, state in enumerate(raw[width]) for key, value in state.items()}


def test_interrupt_then_resume_ends_with_an_uninterrupted_runs_weights(client):
    services = client.services
    assert create(client, "resumed", layer_structure=[1, 2, 1], activation_func="tanh", use_dropout=True,
                  dropout_structure=[0, 0.3, 0]).status_code == 200
    path = folder(client) / "resumed.pt"
    initial = client.data / "resumed-initial.pt"
    shutil.copy(path, initial)
    folders = TrainingFolders(templates=services.paths.training_templates, log_root=client.data)
    # dropout, shuffled tags and "random" latent sampling: the draws of the resumed steps must be the same as well
    request = TrainHypernetworkRequest(hypernetwork_name="resumed", data_root=str(client.dataset), steps=6, seed=11,
                                       **{**SMALL, "learn_rate": "0.02:3, 0.01", "latent_sampling_method": "random",
                                          "shuffle_tags": True})
    loaded = services.generator.load(None)
    run = dict(path=path, model=loaded, folders=folders)
    straight = train_hypernetwork(request, job=StopsAt(10 ** 9), **run)
    assert straight.step == 6 and not straight.interrupted
    uninterrupted = _weights(path)

    shutil.copy(initial, path)
    state = path.with_name("resumed.pt.optim")
    state.unlink()
    stopped = train_hypernetwork(request, job=StopsAt(4), **run)
    assert stopped.interrupted and stopped.step == 4 and load_hypernetwork(path).metadata["step"] == 4
    assert state.exists()
    resumed = train_hypernetwork(request, job=StopsAt(10 ** 9), **run)
    assert resumed.step == 6 and [step for step, _ in resumed.losses] == [5, 6]
    assert stopped.losses + resumed.losses == straight.losses   # the same draws, step for step
    after = _weights(path)
    assert after.keys() == uninterrupted.keys() and all(torch.equal(after[k], uninterrupted[k]) for k in after)
    assert not all(torch.equal(value, _weights(initial)[key]) for key, value in after.items())


def test_interrupt_through_the_api_saves_a_resumable_hypernetwork(client):
    assert create(client, "stopped").status_code == 200
    progress = interrupt_a_running_training(client, "train-hypernetwork",
                                            lambda: train(client, "stopped", steps=100_000))
    assert "Training hypernetwork" in progress["textinfo"] and progress["eta_relative"] > 0, progress
    saved = load_hypernetwork(folder(client) / "stopped.pt")
    assert 1 <= saved.metadata["step"] < 100_000 and (folder(client) / "stopped.pt.optim").exists()


def test_a1111_clients_body_with_id_task_and_a_numeric_rate_trains(client):
    """A1111's route passes the body as train_hypernetwork(**args), whose first parameter is id_task: its clients
    send it (and a plain number as the rate). The id names the job, as force_task_id does for a generation."""
    assert create(client, "fromclient").status_code == 200
    answer = train(client, "fromclient", steps=1, id_task="task(abc123)", learn_rate=0.005, clip_grad_value=1)
    assert answer.status_code == 200, answer.text
    job = client.services.queue.get("task(abc123)")
    assert job is not None and job.kind == "train-hypernetwork" and job.state == "done"
    assert load_hypernetwork(folder(client) / "fromclient.pt").metadata["step"] == 1
