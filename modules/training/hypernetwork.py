"""Hypernetwork training: A1111's Train → Train hypernetwork (`train_hypernetwork`,
`POST /sdapi/v1/train/hypernetwork`) on a loaded SD 1.x / 2.x checkpoint.

Only the hypernetwork's weights learn — AdamW with torch's default weight decay (0.01), as A1111 builds it —
while the UNet, VAE and text encoder stay frozen. Its modules sit on the UNet's attention layers as at generation
(`networks.hypernetwork.applied`, multiplier 1, A1111's training value) and are in training mode, so their dropout
is active; the dropout's draws, like the timesteps and noise, come from the step's seeded generator. Steps, batches,
schedules and the loss are those of the textual-inversion trainer (`common.StepLoop`, `denoising.denoising_loss`).
As in A1111 (whose dataset encodes each image's prompt once for hypernetworks), every image keeps one prompt from the
template for the whole training unless tags are shuffled or dropped, which draw a new one for each batch.

Files, as A1111 writes them: the trained file replaces the hypernetwork's own (`step` the steps done), with its
optimiser state beside it (`<file>.optim`: A1111's `hash` — the file's sha256, first 10 digits —,
`optimizer_name` and `optimizer_state_dict`, plus the training's seed); under `<log_directory>/<date>/<name>/`:
`hypernetworks/<name>-<step>.pt` every `save_hypernetwork_every` steps and `hypernetwork_loss.csv`. Interrupting
saves both: training the same hypernetwork again resumes with the same optimiser state, data order and draws, and
ends where an uninterrupted run would.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path

import torch

from modules.jobs import Job, JobError
from modules.models import files
from modules.models.files import ModelFileError
from modules.networks.hypernetwork import (HypernetworkAttnProcessor, HypernetworkInfo, applied, attention_layers,
                                           load_hypernetwork)
from modules.training import dataset as datasets, previews
from modules.training.common import (BatchPlan, StepLoop, TrainingFolders, TrainingResult, log_folder, loss_weight,
                                     optimizer_state_bytes, prepare_latents, read_training_data, require_sd1_or_sd2,
                                     saved_optimizer_state, training_seed)
from modules.training.denoising import denoising_loss, training_scheduler
from modules.training.hypernetwork_files import HypernetworkFile, Structure, file_hash, save_hypernetwork
from modules.training.learn_schedule import LearnRateScheduler
from modules.training.requests import TrainHypernetworkRequest
from modules.training.text_conditioning import TrainingTextEncoder, frozen

log = logging.getLogger(__name__)

LOSS_LOG = "hypernetwork_loss.csv"
OPTIMIZER_NAME = "AdamW"


class _TrainedOnly:
    """`applied` asks a cache for the file's hypernetwork: this one answers with the modules being trained."""

    def __init__(self, network):
        self.network = network

    def get(self, path):
        return self.network


def train_hypernetwork(request: TrainHypernetworkRequest, *, path: Path, model, folders: TrainingFolders, job: Job,
                       clip_skip: int = 1, emphasis: str = "Original", embeddings: dict | None = None,
                       filename_word_regex: str = "", filename_join_string: str = " ",
                       generate: previews.Generate | None = None) -> TrainingResult:
    """Train the hypernetwork file at `path` on the worker (it owns the model). Everything that can be wrong with
    the request, the file or the dataset is raised as a JobError before the first step. With `generate` (the
    generation core), a preview every `create_image_every` steps: the modules being trained are on the attention
    layers, so it shows them as they are (in eval mode, without dropout, as A1111's preview)."""
    pipeline = model.pipeline
    require_sd1_or_sd2(model, "hypernetwork")
    name = path.stem
    content = path.read_bytes()
    try:
        network = load_hypernetwork(path)
    except ModelFileError as error:
        raise JobError(str(error)) from None
    widths = {layer.width for layer in attention_layers(pipeline)}
    if not set(network.layers) & widths:
        raise JobError(f"hypernetwork '{name}' has modules for context widths {network.widths}, but the attention "
                       f"layers of '{model.info.title}' use {sorted(widths)}: nothing would learn")
    start = int(network.metadata.get("step", 0) or 0)
    result = TrainingResult("hypernetwork", name, path, start, None)
    if start >= request.steps:
        job.textinfo = "Model has already been trained beyond specified max steps"
        return result

    lr_schedule = LearnRateScheduler(request.learn_rate, request.steps, start)
    entries, templates = read_training_data(request, folders.templates, filename_word_regex, filename_join_string)

    device = next(pipeline.unet.parameters()).device
    layers = {width: network.layers[width] for width in _file_order(path)}
    for pair in layers.values():
        for module in pair:
            module.to(device).requires_grad_(True).train()
    parameters = [parameter for pair in layers.values() for module in pair for parameter in module.parameters()]
    saved = saved_optimizer_state(path, file_hash(content))
    optimizer = _optimizer(parameters, lr_schedule.learn_rate, saved, path)
    if optimizer is None:
        saved, optimizer = {}, torch.optim.AdamW(parameters, lr=lr_schedule.learn_rate)
    seed = training_seed(saved, request.seed)
    trained = HypernetworkFile(
        name=name, layers=layers,
        structure=Structure(network.layer_structure, network.activation_func, network.is_layer_norm,
                            network.dropout_structure, network.activate_output),
        weight_initialization=network.metadata.get("weight_initialization", "Normal"),
        use_dropout=any(network.dropout_structure), step=start, sd_checkpoint=model.info.shorthash,
        sd_checkpoint_name=model.info.model_name, optional_info=network.metadata.get("optional_info"))

    folder = log_folder(folders.log_root, request.log_directory, name)
    result.log_folder = folder
    plan = BatchPlan(entries, request.batch_size, request.gradient_step, seed)
    scheduler = training_scheduler(model.scheduler_config)
    job.textinfo = f"Preparing dataset from {request.data_root}..."
    latents = prepare_latents(pipeline.vae, entries, request.latent_sampling_method, seed)
    weights = [loss_weight(entry, latents[index].mean.shape) if request.use_weight else None
               for index, entry in enumerate(entries)]
    redrawn = request.shuffle_tags or request.tag_drop_out != 0
    fixed_texts = [datasets.create_text(entry.filename_text, name, templates, random.Random(f"text:{seed}:{index}"))
                   for index, entry in enumerate(entries)]
    rng_devices = [device] if device.type == "cuda" else []

    def batch_loss(number: int, batch: list[int], generator: torch.Generator) -> torch.Tensor:
        rng = random.Random(generator.initial_seed())
        texts = [datasets.create_text(entries[i].filename_text, name, templates, rng,
                                      shuffle_tags=request.shuffle_tags, tag_drop_out=request.tag_drop_out)
                 if redrawn else fixed_texts[i] for i in batch]
        last_texts[:] = texts
        with torch.no_grad():   # the text encoder is frozen: its output is a constant of the step
            encoder = TrainingTextEncoder(pipeline, model.spec.family, clip_skip=clip_skip, emphasis=emphasis,
                                          embeddings=embeddings)
            cond = encoder.encode_batch(texts).to(device)
        sampled = torch.stack([latents[i].sample(generator if request.latent_sampling_method == "random"
                                                 else None) for i in batch])
        weight = torch.stack([weights[i] for i in batch]) if request.use_weight else None
        with torch.random.fork_rng(devices=rng_devices):   # the dropout's draws, the same again on resume
            torch.manual_seed(generator.initial_seed())
            return denoising_loss(pipeline.unet, scheduler, sampled, cond, generator, weight=weight)

    last_texts: list[str] = []   # the latest batch's prompts: A1111's preview prompt is its first
    modules = [module for pair in layers.values() for module in pair]

    def after_step(step: int) -> None:
        trained.step = step
        if request.save_hypernetwork_every and step % request.save_hypernetwork_every == 0:
            _save(trained, optimizer, seed, folder / "hypernetworks" / f"{name}-{step}.pt")
        if generate is not None and request.create_image_every and step % request.create_image_every == 0:
            for module in modules:
                module.eval()
            try:
                previews.make_preview(generate, previews.PreviewSettings.of(request), last_texts[0], job,
                                      folder / "images", result)
            finally:
                for module in modules:
                    module.train()

    loop = StepLoop(request, job, result, optimizer, lr_schedule, parameters, plan, folder / LOSS_LOG,
                    "Training hypernetwork", batch_loss, after_step)
    info = HypernetworkInfo(name=name, path=path)
    with frozen(pipeline.unet, pipeline.vae, pipeline.text_encoder), torch.enable_grad(), \
            applied(pipeline, [(info, 1.0)], _TrainedOnly(dataclasses.replace(network, layers=layers))):
        if not any(isinstance(layer.attn.processor, HypernetworkAttnProcessor)
                   for layer in attention_layers(pipeline)):
            raise JobError(f"hypernetwork '{name}' could not be put on any attention layer of "
                           f"'{model.info.title}' (see the log): nothing would learn")
        loop.run(start)
    _save(trained, optimizer, seed, path)
    return result


def _file_order(path: Path) -> list[int]:
    """The file's widths in its own order: A1111 numbers the optimiser's parameters in it, so a `.optim` A1111
    wrote fits only in that order."""
    return [key for key in files.load_object(path) if type(key) is int]


def _optimizer(parameters: list, learn_rate: float, saved: dict, path: Path) -> torch.optim.AdamW | None:
    """A1111's optimiser (AdamW, torch's default weight decay) with the saved state; None (start afresh, as A1111's
    'Cannot resume from saved optimizer') when there is none, or it was another optimiser's or does not fit."""
    if not saved:
        return None
    if saved.get("optimizer_name", OPTIMIZER_NAME) != OPTIMIZER_NAME:
        log.warning("%s.optim holds a %s state: the AdamW optimiser starts afresh", path, saved["optimizer_name"])
        return None
    optimizer = torch.optim.AdamW(parameters, lr=learn_rate)
    try:
        optimizer.load_state_dict(saved["optimizer_state_dict"])
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as error:
        log.warning("%s.optim does not fit the hypernetwork (%s): the optimiser starts afresh", path, error)
        return None
    fits = all(value.shape == parameter.shape for parameter, values in optimizer.state.items()
               for key, value in values.items() if key in ("exp_avg", "exp_avg_sq"))
    if not fits:
        log.warning("%s.optim holds another hypernetwork's shapes: the optimiser starts afresh", path)
    return optimizer if fits else None


def _save(trained: HypernetworkFile, optimizer, seed: int, path: Path) -> None:
    """The hypernetwork, then its optimiser state; each written atomically (a full disk keeps the last good file)."""
    from modules.images import replace_atomically

    try:
        state_hash = save_hypernetwork(trained, path)
        replace_atomically(Path(f"{path}.optim"), optimizer_state_bytes(state_hash, optimizer, seed,
                                                                        optimizer_name=OPTIMIZER_NAME))
    except OSError as error:
        from modules.jobs import StorageFull

        raise StorageFull(f"could not save the hypernetwork {path}: {error}") from None
