"""ControlNet training (issue 22) on a tiny SD1 checkpoint: the file is lllyasviel's single-file layout that the
ControlNet loader and registry read, a fresh one changes nothing (zero convolutions) while a trained one steers
generation, the loss on fixed draws goes down, an interrupted training resumes to exactly an uninterrupted run's
weights, and unusable input is refused before any step with nothing written."""
from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers import ControlNetModel
from PIL import Image, ImageDraw
from pydantic import ValidationError

from modules import cmd_args, services as services_module
from modules.controlnet.ldm_layout import controlnet_to_ldm
from modules.controlnet.models import load_controlnet
from modules.controlnet.preprocessors import Preprocessors
from modules.generation.request import validate_request
from modules.jobs import JobError
from modules.training import dataset as datasets
from modules.training.controlnet_training import (ControlNetFolders, TrainControlNetRequest, controlnet_loss,
                                                  state_path, train_controlnet)
from modules.training.denoising import encode, step_generator, training_scheduler
from modules.training.text_conditioning import TrainingTextEncoder, encode_conditioning_batch
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_controlnets import build_tiny_controlnet
from tests.fixtures.training_jobs import StopsAt

SMALL = {"width": 64, "height": 64, "learn_rate": "0.001", "condition_folder": "conditions", "seed": 7}
DISCS = [(8, 8), (36, 10), (12, 34), (34, 34)]




def _condition(corner: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse((*corner, corner[0] + 20, corner[1] + 20), fill="white")
    return image


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("cn"), {"tiny.safetensors": build_tiny_model("sd1")})
    dataset = data / "triples"
    (dataset / "conditions").mkdir(parents=True)
    for index, corner in enumerate(DISCS):   # a red disc where the condition has a white one
        condition = _condition(corner)
        photo = Image.new("RGB", (64, 64), (40, 60, 200))
        ImageDraw.Draw(photo).ellipse((*corner, corner[0] + 20, corner[1] + 20), fill=(220, 30, 30))
        photo.save(dataset / f"{index:02d}.png")
        (dataset / f"{index:02d}.txt").write_text("a red ball")
        condition.save(dataset / "conditions" / f"{index:02d}.jpg" if index % 2 else
                       dataset / "conditions" / f"{index:02d}.png")
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui"]))
    built.data, built.dataset = data, dataset
    yield built
    built.shutdown()


def folders(services) -> ControlNetFolders:
    return ControlNetFolders(controlnets=services.paths.controlnet, templates=services.paths.training_templates,
                             log_root=services.data)


def train(services, name: str, job=None, **fields):
    request = TrainControlNetRequest(name=name, data_root=str(services.dataset), **{**SMALL, **fields})
    return train_controlnet(request, model=services.generator.load(None), folders=folders(services),
                            job=job or StopsAt())


def generate(services, **fields):
    data = {"prompt": "a red ball", "seed": 3, "width": 64, "height": 64, "steps": 3, **fields}
    job = services.submit_txt2img(validate_request(data, services.registry, services.networks,
                                                   controlnet=services.controlnet))
    assert job.done.wait(300) and job.state == "done", job.error
    return np.asarray(job.result.images[0].convert("RGB"), dtype=np.int16)


def unit(model: str) -> dict:
    return {"module": "none", "model": model, "image": _condition((30, 30)), "processor_res": 64}


def fixed_loss(services, controlnet: ControlNetModel) -> float:
    """The dataset's loss under fixed draws: what training lowers."""
    loaded = services.generator.load(None)
    pipe = loaded.pipeline
    entries = datasets.read_dataset(services.dataset, width=64, height=64)
    from modules.controlnet.control import hint_tensor

    hints = torch.cat([hint_tensor(_condition(corner)) for corner in DISCS])
    scheduler = training_scheduler(loaded.scheduler_config)
    with torch.no_grad():
        latents = torch.stack([encode(pipe.vae, entry.pixels).mean for entry in entries])
        text = encode_conditioning_batch(TrainingTextEncoder(pipe, loaded.spec.family), ["a red ball"] * len(DISCS))
        return sum(float(controlnet_loss(controlnet, pipe.unet, scheduler, latents, text.embeds, hints,
                                         step_generator(99, draw))) for draw in range(6))


def test_a_fresh_controlnet_in_the_ldm_layout_changes_nothing(services):
    fresh = ControlNetModel.from_unet(services.generator.load(None).pipeline.unet)
    path = services.paths.controlnet / "fresh.safetensors"
    safetensors.torch.save_file({"control_model." + k: v.contiguous() for k, v in controlnet_to_ldm(fresh).items()},
                                str(path))
    loaded, family = load_controlnet(path, torch.float32)
    assert family.id == "sd1" and all(torch.equal(loaded.state_dict()[k], v) for k, v in fresh.state_dict().items())
    services.controlnet.registry.refresh()
    assert np.array_equal(generate(services, controlnet_units=[unit("fresh")]), generate(services))


def test_training_writes_a_controlnet_that_loads_and_steers_generation(services):
    untrained = ControlNetModel.from_unet(services.generator.load(None).pipeline.unet)
    result = train(services, "discs", steps=16, batch_size=2, save_every=8)
    path = services.paths.controlnet / "discs.safetensors"
    assert result.path == path and result.step == 16 and not result.interrupted and len(result.losses) == 16
    with safetensors.safe_open(str(path), framework="pt") as file:
        keys, metadata = set(file.keys()), file.metadata()
    assert {"control_model.input_hint_block.0.weight", "control_model.input_hint_block.14.weight",
            "control_model.zero_convs.0.0.weight", "control_model.middle_block_out.0.weight",
            "control_model.input_blocks.1.1.proj_in.weight"} <= keys
    assert all(key.startswith("control_model.") for key in keys)
    assert metadata["base_model"] == "tiny" and metadata["controlnet_training_steps"] == "16"
    assert (services.paths.controlnet / "discs-000008.safetensors").exists() and state_path(path).exists()
    rows = next((services.data / "controlnet").glob("*/discs")).joinpath("controlnet_loss.csv").read_text()
    assert rows.startswith("step,epoch,epoch_step,loss,learn_rate") and len(rows.splitlines()) == 17

    trained, family = load_controlnet(path, torch.float32)
    assert family.id == "sd1"
    assert fixed_loss(services, trained) < fixed_loss(services, untrained)
    services.controlnet.registry.refresh()
    assert services.controlnet.registry.find("discs") is not None
    assert not np.array_equal(generate(services, controlnet_units=[unit("discs")]), generate(services))
    # trained to the asked steps: nothing more to do, the file stays
    kept = path.read_bytes()
    assert train(services, "discs", steps=16).step == 16 and path.read_bytes() == kept


def test_interrupt_then_resume_ends_with_an_uninterrupted_runs_weights(services):
    fields = {"steps": 6, "batch_size": 2, "learn_rate": "0.002:3, 0.001", "proportion_empty_prompts": 0.5}
    straight = train(services, "straight", **fields)
    uninterrupted = {k: v.clone() for k, v in safetensors.torch.load_file(
        services.paths.controlnet / "straight.safetensors").items()}
    stopped = train(services, "resumed", job=StopsAt(4), **fields)
    path = services.paths.controlnet / "resumed.safetensors"
    assert stopped.interrupted and stopped.step == 4 and state_path(path).exists()
    resumed = train(services, "resumed", **fields)
    assert [step for step, _ in resumed.losses] == [5, 6]
    assert stopped.losses + resumed.losses == straight.losses   # the same data order and draws, step for step
    weights = safetensors.torch.load_file(path)
    assert set(weights) == set(uninterrupted) and all(torch.equal(weights[k], uninterrupted[k]) for k in weights)


def test_conditions_made_by_an_annotator(services, tmp_path):
    preprocessors = Preprocessors(tmp_path, torch.device("cpu"))
    result = train_controlnet(
        TrainControlNetRequest(name="canny-made", data_root=str(services.dataset), annotator="canny", steps=2,
                               **{k: v for k, v in SMALL.items() if k != "condition_folder"}),
        model=services.generator.load(None), folders=folders(services), job=StopsAt(), annotate=preprocessors.run)
    assert result.step == 2 and (services.paths.controlnet / "canny-made.safetensors").exists()


def test_bad_input_is_refused_before_any_step_with_nothing_written(services, tmp_path):
    broken = tmp_path / "broken"
    (broken / "conditions").mkdir(parents=True)
    for name in ("a", "b"):
        Image.new("RGB", (64, 64), "red").save(broken / f"{name}.png")
    Image.new("RGB", (64, 64), "white").save(broken / "conditions" / "a.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    wide = tmp_path / "wide"
    (wide / "conditions").mkdir(parents=True)
    Image.new("RGB", (64, 64), "red").save(wide / "a.png")
    Image.new("RGB", (128, 64), "white").save(wide / "conditions" / "a.png")
    before = set(services.paths.controlnet.iterdir())
    for root, words in ((broken, "No condition image for b.png"), (empty, "empty"), (wide, "shapes must match"),
                        (tmp_path / "missing", "does not exist")):
        job = StopsAt()
        with pytest.raises(JobError, match=words):
            train_controlnet(TrainControlNetRequest(name="never", data_root=str(root), steps=2, **SMALL),
                             model=services.generator.load(None), folders=folders(services), job=job)
        assert job.step == 0
    with pytest.raises(JobError, match="annotator canny is not available"):
        train(services, "never", annotator="canny", condition_folder="", steps=2)
    # an SDXL ControlNet of this name being resumed on the SD1 checkpoint
    xl = {"control_model." + k: v.contiguous() for k, v in controlnet_to_ldm(build_tiny_controlnet("sdxl")).items()}
    xl_path = services.paths.controlnet / "xl-made.safetensors"
    safetensors.torch.save_file(xl, str(xl_path), metadata={"controlnet_training_steps": "3"})
    kept = xl_path.read_bytes()
    with pytest.raises(JobError, match="SDXL"):
        train(services, "xl-made", steps=5)
    assert xl_path.read_bytes() == kept
    assert set(services.paths.controlnet.iterdir()) == before | {xl_path}
    assert not list((services.data / "controlnet").glob("*/never"))


@pytest.mark.parametrize("fields, named", [
    ({"condition_folder": ""}, "condition_folder"), ({"annotator": "canny"}, "one of the two"),
    ({"annotator": "sparkles", "condition_folder": ""}, "sparkles"), ({"width": 60}, "width"),
    ({"learn_rate": "fast"}, "learn_rate"), ({"clip_grad_value": "x"}, "clip_grad_value"),
    ({"name": "../up"}, "file name"),
])
def test_bad_fields_are_refused_naming_them(fields, named):
    with pytest.raises(ValidationError, match=named):
        TrainControlNetRequest(**{"name": "x", "data_root": "/data", **SMALL, **fields})


def test_sdxl_controlnet_trains_loads_and_steers(tmp_path):
    data = data_dir_with_checkpoints(tmp_path, {"tiny-xl.safetensors": build_tiny_model("sdxl")})
    dataset = tmp_path / "triples"
    (dataset / "conditions").mkdir(parents=True)
    for index, corner in enumerate(DISCS[:2]):
        Image.new("RGB", (64, 64), (200, 20, 20)).save(dataset / f"{index}.png")
        _condition(corner).save(dataset / "conditions" / f"{index}.png")
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui"]))
    built.data, built.dataset = data, dataset
    try:
        result = train(built, "xl-discs", steps=3)
        trained, family = load_controlnet(built.paths.controlnet / "xl-discs.safetensors", torch.float32)
        assert result.step == 3 and family.id == "sdxl" and "add_embedding.linear_1.weight" in trained.state_dict()
        built.controlnet.registry.refresh()
        assert not np.array_equal(generate(built, controlnet_units=[unit("xl-discs")]), generate(built))
    finally:
        built.shutdown()


def test_the_train_controlnet_route_trains_and_lists_it(services):
    from tests.fixtures.app_client import app_client
    from webui import create_app

    with app_client(create_app(services)) as client:
        answer = client.post("/sdapi/v1/train/controlnet", json={"name": "viaapi", "data_root": str(services.dataset),
                                                                 "steps": 2, **SMALL})
        path = services.paths.controlnet / "viaapi.safetensors"
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"info": f"train controlnet complete: filename: {path} error: None"}
        assert any("viaapi" in title for title in client.get("/controlnet/model_list").json()["model_list"])
        refused = client.post("/sdapi/v1/train/controlnet", json={"name": "x", "data_root": str(services.dataset),
                                                                  "width": 60})
        assert refused.status_code == 422 and "width" in refused.text
        assert "/sdapi/v1/train/controlnet" in client.get("/openapi.json").json()["paths"]


def test_previews_are_generated_with_the_controlnet_as_trained_so_far(services):
    """A preview every N steps: the ControlNet saved with its resumable state, then a txt2img guided by it (with
    the first image's condition), saved with its infotext and shown as the job's preview."""
    job = services.submit_train_controlnet(TrainControlNetRequest(
        name="previewed", data_root=str(services.dataset), steps=2, preview_every=1, preview_prompt="a red ball",
        **SMALL))
    assert job.done.wait(300) and job.state == "done", job.error
    images = sorted((services.data / "controlnet").glob("*/previewed/images/*.png"))
    assert [path.name for path in images] == ["previewed-1.png", "previewed-2.png"]
    shot = Image.open(images[0])
    infotext = shot.info["parameters"]
    assert shot.size == (64, 64) and infotext.startswith("a red ball")
    assert "ControlNet 0: " in infotext and "Model: previewed" in infotext
    assert job.preview is not None and job.preview.size == (64, 64)


def test_gradient_checkpointing_recomputes_and_trains_the_same_controlnet(services):
    """With checkpointing the ControlNet's and the UNet's resnets run again in the backward pass (fewer activations
    kept), and the trained weights are those of a run without it."""
    pipe = services.generator.load(None).pipeline
    weights, starts = {}, {}
    for checkpointing in (False, True):
        count = [0]
        hooks = [module.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
                 for module in pipe.unet.modules() if type(module).__name__ == "ResnetBlock2D"]
        try:
            train(services, f"checkpointed{int(checkpointing)}", steps=2, gradient_checkpointing=checkpointing)
        finally:
            for hook in hooks:
                hook.remove()
        starts[checkpointing] = count[0]
        weights[checkpointing] = safetensors.torch.load_file(
            services.paths.controlnet / f"checkpointed{int(checkpointing)}.safetensors")
    assert starts[True] > starts[False], starts
    assert not pipe.unet.is_gradient_checkpointing
    assert all(torch.allclose(weights[True][key], weights[False][key], atol=1e-6) for key in weights[False])


def test_the_resume_state_is_not_listed_as_a_controlnet(services):
    train(services, "listed", steps=1)
    names = [info.name for info in services.controlnet.registry.refresh()]
    assert "listed" in names and not any("state" in name for name in names)
    assert state_path(services.paths.controlnet / "listed.safetensors").name == "listed.safetensors.state"
