"""LoRA training (issue 22) on tiny SD1 and SDXL checkpoints: the file in kohya's layout with its ss_* metadata,
read by our LoRA loader (it changes the generated image) and by diffusers' own `load_lora_weights`; the model left
as it was; an interrupted training resumed to exactly the weights of an uninterrupted one; bad input refused before
any step, and a full disk keeping the last good file."""
from __future__ import annotations

import errno
import hashlib
import json
import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from PIL import Image
from pydantic import ValidationError

from modules import cmd_args, services as services_module
from modules.jobs import JobError, StorageFull
from modules.networks.lora.layers import match
from modules.training import lora_training
from modules.training.lora_requests import TrainLoraRequest
from modules.training.lora_training import LoraFolders, bucket_size, state_path, train_lora
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.pipelines import build_pipeline
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.training_jobs import StopsAt

SMALL = {"resolution": 64, "rank": 4, "seed": 3}


def _write_images(folder, sizes_and_captions):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, ((width, height), caption) in enumerate(sizes_and_captions):
        pixels = (rng.random((height, width, 3)) * 60 + [180, 20, 20]).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:02d}.png")
        (folder / f"{index:02d}.txt").write_text(caption)
    return folder


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("lora_training"),
                                     {"tiny.safetensors": build_tiny_model("sd1")})
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as test_client:
        test_client.services, test_client.data = services, data
        test_client.dataset = _write_images(data / "dataset", [((64, 64), "a red square"), ((64, 64), "a red ball")])
        # mixed sizes: with bucketing the wide ones share a bucket of their own
        test_client.mixed = _write_images(data / "mixed", [((64, 64), "square"), ((128, 64), "wide one"),
                                                           ((128, 64), "wide two"), ((64, 64), "square two")])
        test_client.folders = LoraFolders(loras=services.paths.lora, log_root=data)
        yield test_client
    services.shutdown()




def _request(client, **fields) -> TrainLoraRequest:
    return TrainLoraRequest(**{"data_root": str(client.dataset), **SMALL, **fields})


def _weights(module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def _txt2img(client, prompt: str) -> str:
    answer = client.post("/sdapi/v1/txt2img", json={"prompt": prompt, "steps": 2, "width": 64, "height": 64,
                                                   "seed": 5})
    assert answer.status_code == 200, answer.text
    return answer.json()["images"][0]


def test_the_trained_file_is_kohyas_and_changes_the_image(client):
    loaded = client.services.generator.load(None)
    pipe = loaded.pipeline
    before = {name: _weights(getattr(pipe, name)) for name in ("unet", "text_encoder")}
    tree = [name for name, _ in pipe.unet.named_modules()]
    baseline = _txt2img(client, "<lora:redthing:1> a red square")

    result = train_lora(_request(client, name="redthing", steps=4, unet_lr=0.02, text_encoder_lr=0.01,
                                 train_text_encoder=True, alpha=2.0, save_every=2),
                        model=loaded, folders=client.folders, job=StopsAt())
    path = client.services.paths.lora / "redthing.safetensors"
    assert result.path == path and result.step == 4 and not result.interrupted and len(result.losses) == 4
    # the model is as it was: no peft layer left, every weight bit for bit
    assert [name for name, _ in pipe.unet.named_modules()] == tree
    assert all(torch.equal(value, before[name][key]) for name in before
               for key, value in getattr(pipe, name).state_dict().items())

    tensors = safetensors.torch.load_file(path)
    modules = {key.split(".", 1)[0] for key in tensors}
    assert all(name.startswith(("lora_unet_", "lora_te_")) for name in modules)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in modules
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in modules
    for name in modules:
        down, up, alpha = (tensors[f"{name}.{part}"] for part in ("lora_down.weight", "lora_up.weight", "alpha"))
        assert down.shape[0] == up.shape[1] == 4 and float(alpha) == 2.0 and down.dtype == torch.float16
    with safetensors.safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    assert {key: metadata[key] for key in ("ss_network_module", "ss_network_dim", "ss_network_alpha",
                                           "ss_base_model_version", "ss_steps", "ss_num_train_images",
                                           "ss_resolution", "ss_output_name")} == {
        "ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2",
        "ss_base_model_version": "sd_v1", "ss_steps": "4", "ss_num_train_images": "2",
        "ss_resolution": "(64, 64)", "ss_output_name": "redthing"}
    assert metadata["ss_sd_model_hash"] == loaded.info.oldhash and float(metadata["ss_training_started_at"]) > 0
    data = path.read_bytes()   # A1111's LoRA hash: sha256 of what follows the header
    assert metadata["sshs_model_hash"] == hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()
    assert (client.services.paths.lora / "redthing-000002.safetensors").exists()
    assert not (client.services.paths.lora / "redthing-000004.safetensors").exists()
    rows = next(client.data.glob("lora/*/redthing/lora_loss.csv")).read_text().splitlines()
    assert rows[0] == "step,epoch,epoch_step,loss,learn_rate" and len(rows) == 5

    # our loader: every layer matches the model, and the generated image changes
    assert client.post("/sdapi/v1/refresh-loras").status_code == 200
    found = match(tensors, pipe, loaded.spec.family)
    assert len(found.matched) == found.total == len(modules)
    assert _txt2img(client, "<lora:redthing:1> a red square") != baseline

    # diffusers' own loader reads it with no key left over
    fresh = build_pipeline(build_tiny_model("sd1"))
    fresh.load_lora_weights(str(path), adapter_name="trained")
    assert _peft_layers(fresh) == len(modules)


def _peft_layers(pipe) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    components = [getattr(pipe, name, None) for name in ("unet", "text_encoder", "text_encoder_2")]
    return sum(isinstance(module, BaseTunerLayer) for component in components if component is not None
               for module in component.modules())


def _adapter(path) -> dict[str, torch.Tensor]:
    state = torch.load(state_path(path), weights_only=True)
    return {key: value.clone() for key, value in state["adapter"].items()}


def test_interrupt_then_resume_ends_with_an_uninterrupted_runs_weights(client):
    loaded = client.services.generator.load(None)
    path = client.services.paths.lora / "resumed.safetensors"
    # everything that draws or keeps state: buckets, captions dropped, min-SNR, noise offset, warm-up and cosine
    request = _request(client, name="resumed", data_root=str(client.mixed), steps=5, batch_size=2,
                       gradient_accumulation=2, bucketing=True, caption_dropout=0.3, min_snr_gamma=5.0,
                       noise_offset=0.1, lr_scheduler="cosine", lr_warmup_steps=2, unet_lr=0.01,
                       train_text_encoder=True, target="all_linear")
    straight = train_lora(request, model=loaded, folders=client.folders, job=StopsAt())
    uninterrupted, uninterrupted_file = _adapter(path), path.read_bytes()
    path.unlink()
    state_path(path).unlink()

    stopped = train_lora(request, model=loaded, folders=client.folders, job=StopsAt(stop_at=3))
    assert stopped.interrupted and stopped.step == 3 and state_path(path).exists()
    with safetensors.safe_open(path, "pt") as handle:
        assert handle.metadata()["ss_steps"] == "3"
    resumed = train_lora(request, model=loaded, folders=client.folders, job=StopsAt())
    assert resumed.step == 5 and [step for step, _ in resumed.losses] == [4, 5]
    assert stopped.losses + resumed.losses == straight.losses
    after = _adapter(path)
    assert after.keys() == uninterrupted.keys()
    assert all(torch.equal(after[key], uninterrupted[key]) for key in after)
    assert safetensors.torch.load(path.read_bytes()).keys() == safetensors.torch.load(uninterrupted_file).keys()
    # trained to its steps already: nothing more is done and the file stays
    kept = path.read_bytes()
    assert train_lora(request, model=loaded, folders=client.folders, job=StopsAt()).step == 5
    assert path.read_bytes() == kept


def test_dreambooth_prior_preservation_adds_the_class_images_loss(client):
    loaded = client.services.generator.load(None)
    classes = _write_images(client.data / "class_images", [((64, 64), ""), ((64, 64), "")])
    plain = train_lora(_request(client, name="sks_plain", instance_prompt="a photo of sks square", steps=2,
                                use_captions=False), model=loaded, folders=client.folders, job=StopsAt())
    dreambooth = train_lora(_request(client, name="sks", instance_prompt="a photo of sks square", steps=2,
                                     use_captions=False, class_data_root=str(classes),
                                     class_prompt="a photo of a square", prior_loss_weight=1.0),
                            model=loaded, folders=client.folders, job=StopsAt())
    # the same instance draws, plus the class images' loss
    assert dreambooth.losses[0][1] > plain.losses[0][1]
    with safetensors.safe_open(dreambooth.path, "pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_num_reg_images"] == "2" and metadata["ss_prior_loss_weight"] == "1"


def test_bucket_sizes_keep_the_aspect_ratio_within_the_area():
    assert bucket_size(512, 512, 512) == (512, 512)
    width, height = bucket_size(1024, 512, 512)
    assert width * height <= 512 * 512 and width % 64 == 0 and height % 64 == 0 and 1.8 <= width / height <= 2.4
    assert bucket_size(128, 64, 64) == (88, 40)


@pytest.mark.parametrize("fields", [{"rank": 0}, {"rank": 257}, {"batch_size": 0}, {"resolution": 60},
                                    {"name": "../escape"}, {"class_data_root": "/x"}, {"lr_scheduler": "bogus"}])
def test_out_of_range_fields_are_refused_naming_them(client, fields):
    with pytest.raises(ValidationError) as error:
        _request(client, **{"name": "bad", "steps": 1, **fields})
    assert next(iter(fields)) in str(error.value) or "class_prompt" in str(error.value)


def test_bad_input_fails_before_any_step_and_writes_nothing(client, tmp_path):
    loaded = client.services.generator.load(None)
    folders = LoraFolders(loras=tmp_path / "Lora", log_root=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    unreadable = tmp_path / "broken"
    unreadable.mkdir()
    (unreadable / "a.png").write_bytes(b"not a png")
    cases = [(_request(client, name="a", data_root=str(empty), steps=1), "is empty"),
             (_request(client, name="b", data_root=str(unreadable), steps=1), "could be read"),
             (_request(client, name="c", data_root=str(tmp_path / "missing"), steps=1), "does not exist"),
             (_request(client, name="d", optimizer="AdamW8bit", steps=1), "CUDA")]
    for request, message in cases:
        with pytest.raises(JobError, match=message):
            train_lora(request, model=loaded, folders=folders, job=StopsAt())
    assert not (tmp_path / "Lora").exists() or not any((tmp_path / "Lora").iterdir())

    # a file of that name not trained here, and a state from another family
    folders.loras.mkdir(exist_ok=True)
    (folders.loras / "taken.safetensors").write_bytes(b"x")
    with pytest.raises(JobError, match="already exists"):
        train_lora(_request(client, name="taken", steps=1), model=loaded, folders=folders, job=StopsAt())
    request = _request(client, name="other", steps=1)
    torch.save({"step": 1, "seed": 1, "family": "sdxl", "adapter": {}}, state_path(folders.loras / "other.safetensors"))
    with pytest.raises(JobError, match="sdxl checkpoint"):
        train_lora(request, model=loaded, folders=folders, job=StopsAt())
    torch.save({"step": 1, "seed": 1, "family": "sd1", "adapter": {}, "rank": 8, "network_alpha": 8.0,
                "target": "attention", "train_text_encoder": False, "optimizer": "AdamW"},
               state_path(folders.loras / "other.safetensors"))
    with pytest.raises(JobError, match="rank=8"):
        train_lora(request, model=loaded, folders=folders, job=StopsAt())


def test_a_full_disk_keeps_the_last_good_file(client, monkeypatch):
    loaded = client.services.generator.load(None)
    path = client.services.paths.lora / "full.safetensors"
    request = _request(client, name="full", steps=2, unet_lr=0.01)
    train_lora(request.model_copy(update={"steps": 1}), model=loaded, folders=client.folders, job=StopsAt())
    good, good_state = path.read_bytes(), state_path(path).read_bytes()
    from modules import images

    def full_disk(target, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images, "replace_atomically", full_disk)
    with pytest.raises(StorageFull, match="full.safetensors"):
        train_lora(request, model=loaded, folders=client.folders, job=StopsAt())
    assert path.read_bytes() == good and state_path(path).read_bytes() == good_state
    assert not [name for name in path.parent.iterdir() if name.name.startswith(".")]   # no temp file left


def test_sdxl_lora_has_kohyas_sgm_names_and_loads_in_both_loaders(tmp_path):
    from modules.models import families

    tiny = build_tiny_model("sdxl")
    pipe = build_pipeline(tiny)

    class _Model:   # a LoadedModel's fields the trainer reads
        pipeline = pipe
        scheduler_config = dict(pipe.scheduler.config)

        class spec:
            family, inpainting = families.SDXL, False

        class info:
            title, model_name, oldhash, sha256 = "tiny-xl", "tiny-xl", "0123abcd", None

    dataset = _write_images(tmp_path / "xl", [((64, 64), "a red square")])
    request = TrainLoraRequest(name="xl", data_root=str(dataset), steps=2, train_text_encoder=True, unet_lr=0.01,
                               target="all_linear",
                               **SMALL)
    folders = LoraFolders(loras=tmp_path / "Lora", log_root=tmp_path)
    assert train_lora(request, model=_Model, folders=folders, job=StopsAt()).step == 2
    path = folders.loras / "xl.safetensors"
    tensors = safetensors.torch.load_file(path)
    modules = {key.split(".", 1)[0] for key in tensors}
    assert {name.split("_text_model_")[0] for name in modules if "_text_model_" in name} == {"lora_te1", "lora_te2"}
    assert any(name.startswith("lora_unet_input_blocks_") for name in modules)
    assert not any(name.startswith("lora_unet_down_blocks_") for name in modules)
    with safetensors.safe_open(path, "pt") as handle:
        assert handle.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
    found = match(tensors, pipe, families.SDXL)
    assert len(found.matched) == found.total == len(modules)
    fresh = build_pipeline(build_tiny_model("sdxl"))
    fresh.load_lora_weights(str(path), adapter_name="trained")
    assert _peft_layers(fresh) == len(modules)   # every layer of the file, in the UNet and both encoders


def test_no_layers_stay_behind_when_a_training_fails(client, monkeypatch):
    loaded = client.services.generator.load(None)
    unet = loaded.pipeline.unet
    tree = [name for name, _ in unet.named_modules()]
    trainable = [parameter.requires_grad for parameter in unet.parameters()]

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(lora_training, "lora_loss", broken)
    with pytest.raises(RuntimeError, match="boom"):
        train_lora(_request(client, name="broken", steps=1), model=loaded, folders=client.folders, job=StopsAt())
    assert [name for name, _ in unet.named_modules()] == tree and not hasattr(unet, "peft_config")
    assert [parameter.requires_grad for parameter in unet.parameters()] == trainable


def test_the_train_lora_route_trains_lists_and_refuses_bad_fields(client):
    answer = client.post("/sdapi/v1/train/lora", json={"name": "viaapi", "data_root": str(client.dataset),
                                                      "steps": 2, **SMALL})
    path = client.services.paths.lora / "viaapi.safetensors"
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"info": f"train lora complete: filename: {path} error: None"}
    assert "viaapi" in [lora["name"] for lora in client.get("/sdapi/v1/loras").json()]
    refused = client.post("/sdapi/v1/train/lora", json={"name": "x", "data_root": str(client.dataset), "rank": 0})
    assert refused.status_code == 422 and "rank" in refused.text
    missing = client.post("/sdapi/v1/train/lora", json={"name": "y", "data_root": "/no/such/folder", "steps": 1})
    assert missing.status_code == 422 and "/no/such/folder" in missing.text
    assert "/sdapi/v1/train/lora" in client.get("/openapi.json").json()["paths"]   # documented in /docs


def test_previews_show_the_adapter_being_trained(client):
    """A preview every N steps, made through the generation core with the LoRA being trained in the model."""
    answer = client.post("/sdapi/v1/train/lora", json={"name": "previewed", "data_root": str(client.dataset),
                                                      "steps": 2, "preview_every": 1,
                                                      "preview_prompt": "a red ball", **SMALL})
    assert answer.status_code == 200, answer.text
    images = sorted((client.data / "lora").glob("*/previewed/images/*.png"))
    assert [path.name for path in images] == ["previewed-1.png", "previewed-2.png"]
    from PIL import Image

    shot = Image.open(images[0])
    assert shot.size == (64, 64) and shot.info["parameters"].startswith("a red ball")


def _forward_counts(pipe, kinds: tuple[str, ...]) -> tuple[dict[str, int], list]:
    """How many times modules of these class names start a forward pass; the hooks to remove. (A pre-hook: a
    checkpoint's recomputation stops once it has what the backward pass needs, before any forward hook.)"""
    counts = {kind: 0 for kind in kinds}
    hooks = []
    for component in (pipe.unet, pipe.text_encoder):
        for module in component.modules():
            kind = type(module).__name__
            if kind in counts:
                hooks.append(module.register_forward_pre_hook(
                    lambda *_args, kind=kind: counts.__setitem__(kind, counts[kind] + 1)))
    return counts, hooks


def test_gradient_checkpointing_recomputes_activations_and_trains_the_same_weights(client):
    """Checkpointing runs the UNet's resnets and the text encoder's layers (their MLPs counted) again in the backward
    pass (it keeps fewer activations), and the weights it trains are those of a run without it."""
    loaded = client.services.generator.load(None)
    pipe = loaded.pipeline
    weights, runs = {}, {}
    for checkpointing in (False, True):
        request = _request(client, name=f"checkpointed{int(checkpointing)}", steps=2, unet_lr=0.01,
                           train_text_encoder=True, gradient_checkpointing=checkpointing)
        counts, hooks = _forward_counts(pipe, ("ResnetBlock2D", "CLIPMLP"))
        try:
            train_lora(request, model=loaded, folders=client.folders, job=StopsAt())
        finally:
            for hook in hooks:
                hook.remove()
        runs[checkpointing] = counts
        weights[checkpointing] = _adapter(client.services.paths.lora / f"checkpointed{int(checkpointing)}.safetensors")
    assert all(runs[True][kind] > runs[False][kind] for kind in runs[False]), runs
    assert not pipe.unet.is_gradient_checkpointing and not pipe.text_encoder.training   # the model as it was
    assert weights[True].keys() == weights[False].keys()
    assert all(torch.allclose(weights[True][key], weights[False][key], atol=1e-6) for key in weights[True])


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_computes_in_the_lower_precision_and_keeps_float32_weights(client, precision, dtype):
    loaded = client.services.generator.load(None)
    seen = set()
    hook = loaded.pipeline.unet.conv_in.register_forward_hook(lambda _m, _i, output: seen.add(output.dtype))
    try:
        result = train_lora(_request(client, name=f"mixed-{precision}", steps=2, unet_lr=0.01,
                                     mixed_precision=precision), model=loaded, folders=client.folders, job=StopsAt())
    finally:
        hook.remove()
    assert dtype in seen and result.step == 2
    assert all(np.isfinite(loss) for _, loss in result.losses)
    adapter = _adapter(result.path)
    assert adapter and all(value.dtype == torch.float32 and torch.isfinite(value).all() for value in adapter.values())


def _fixed_draws_loss(pipe, family, entries) -> float:
    """The dataset's denoising loss under fixed draws (timesteps and noise): what training lowers."""
    from modules.training.denoising import denoising_loss, encode, step_generator, training_scheduler
    from modules.training.text_conditioning import TrainingTextEncoder

    scheduler = training_scheduler(dict(pipe.scheduler.config))
    with torch.no_grad():
        latents = torch.stack([encode(pipe.vae, entry.pixels).mean for entry in entries])
        cond = TrainingTextEncoder(pipe, family).encode_batch([entry.filename_text for entry in entries])
        return sum(float(denoising_loss(pipe.unet, scheduler, latents, cond, step_generator(99, draw)))
                   for draw in range(8))


def test_training_lowers_the_loss_on_a_dataset_it_can_overfit(client):
    from modules.training import dataset as datasets

    loaded = client.services.generator.load(None)
    result = train_lora(_request(client, name="overfit", steps=16, unet_lr=0.03, batch_size=2),
                        model=loaded, folders=client.folders, job=StopsAt())
    entries = datasets.read_dataset(client.dataset, width=64, height=64)
    pipe = build_pipeline(build_tiny_model("sd1"))   # the checkpoint's model, apart from the served one
    before = _fixed_draws_loss(pipe, loaded.spec.family, entries)
    pipe.load_lora_weights(str(result.path), adapter_name="overfit")
    assert _fixed_draws_loss(pipe, loaded.spec.family, entries) < before * 0.9


def test_metadata_describes_the_dataset_as_trained(client):
    """The batch as clipped to the dataset, the epoch reached, and the dataset's tag frequencies (A1111's LoRA card
    lists a LoRA's training tags from ss_tag_frequency)."""
    result = train_lora(_request(client, name="described", steps=3, batch_size=10),   # 2 images: batches of 2
                        model=client.services.generator.load(None), folders=client.folders, job=StopsAt())
    with safetensors.safe_open(result.path, "pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_batch_size_per_device"] == "2" and metadata["ss_epoch"] == "3"
    assert json.loads(metadata["ss_tag_frequency"]) == {"dataset": {"a red square": 1, "a red ball": 1}}
    assert json.loads(metadata["ss_dataset_dirs"]) == {"dataset": {"n_repeats": 1, "img_count": 2}}
    assert metadata["ss_enable_bucket"] == "False" and metadata["ss_bucket_info"] == "null"


def test_overwrite_starts_afresh_where_resuming_would_refuse(client):
    loaded = client.services.generator.load(None)
    train_lora(_request(client, name="redo", steps=2, rank=4), model=loaded, folders=client.folders, job=StopsAt())
    with pytest.raises(JobError, match="rank=4.*start afresh"):
        train_lora(_request(client, name="redo", steps=4, rank=8), model=loaded, folders=client.folders,
                   job=StopsAt())
    redone = train_lora(_request(client, name="redo", steps=2, rank=8, overwrite=True), model=loaded,
                        folders=client.folders, job=StopsAt())
    assert redone.started_from == 0 and redone.step == 2
    with safetensors.safe_open(redone.path, "pt") as handle:
        assert handle.metadata()["ss_network_dim"] == "8"


def test_the_bucket_log_lists_the_sizes_trained_at(client, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="modules.training.dataset")
    result = train_lora(_request(client, name="bucketlog", data_root=str(client.mixed), steps=1, bucketing=True),
                        model=client.services.generator.load(None), folders=client.folders, job=StopsAt())
    with safetensors.safe_open(result.path, "pt") as handle:
        buckets = json.loads(handle.metadata()["ss_bucket_info"])["buckets"]
    logged = [record.getMessage() for record in caplog.records if "buckets" in record.getMessage()]
    assert logged == ["Training dataset buckets: " + ", ".join(
        f"{size}: {count}" for size, count in sorted(buckets.items(), key=lambda item: tuple(
            map(int, item[0].split("x")))))], logged
