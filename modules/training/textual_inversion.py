"""Textual-inversion training: A1111's Train → Train embedding (`train_embedding`, `POST /sdapi/v1/train/embedding`)
on a loaded SD 1.x / 2.x checkpoint.

Only the embedding's vectors learn (AdamW, weight decay 0, A1111's learning-rate schedule string, optional
gradient clipping by value or norm with its own schedule, gradient accumulation); the UNet, VAE and text encoder
stay frozen. Each optimiser step takes `gradient_step` batches of `batch_size` images from the dataset
(`dataset.py`: captions through the prompt template, tags shuffled or dropped), their latents (encoded once, as
A1111's "once" / "deterministic" / "random" latent sampling says), and minimises `denoising.denoising_loss`.

Files, as A1111 writes them: the embedding in the embeddings folder (`<name>.pt`, its `step` the steps done) with
its optimiser state beside it (`<name>.pt.optim`: A1111's `hash` and `optimizer_state_dict`, plus the training's
seed); under `<log_directory>/<date>/<name>/`: `embeddings/<name>-<step>.pt` every `save_embedding_every` steps
and `textual_inversion_loss.csv`. Interrupting saves both files: training the same embedding again resumes from
its step with the same optimiser state, data order and noise, and ends where an uninterrupted run would.
"""
from __future__ import annotations

import csv
import datetime
import hashlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modules.jobs import Job, JobError
from modules.networks.textual_inversion import SINGLE_KEY, Embedding, encoder_widths, fit_problem, load_embedding
from modules.training import dataset as datasets
from modules.training.denoising import LatentDistribution, denoising_loss, encode, step_generator, training_scheduler
from modules.training.embedding_files import save_embedding
from modules.training.learn_schedule import LearnRateScheduler
from modules.training.requests import TrainEmbeddingRequest
from modules.training.text_conditioning import TrainingTextEncoder, frozen

log = logging.getLogger(__name__)

LOSS_LOG = "textual_inversion_loss.csv"


@dataclass
class TrainingResult:
    """What a finished (or interrupted) training reports; `losses` holds (step, loss) for the loss chart."""
    kind: str
    name: str
    path: Path
    step: int
    log_folder: Path | None
    interrupted: bool = False
    losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def info(self) -> str:
        """A1111's API answer text."""
        return f"train {self.kind} complete: filename: {self.path} error: None"


@dataclass
class TrainingFolders:
    embeddings: Path
    templates: Path
    log_root: Path


def find_embedding_file(folder: Path, name: str) -> Path:
    for suffix in (".pt", ".safetensors", ".bin"):
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    raise JobError(f"no embedding named '{name}' in {folder}: create it first (Train → Create embedding)")


def vectors_hash(vectors: torch.Tensor) -> str:
    """A1111's `Embedding.checksum()` role: whether a saved optimiser state belongs to these vectors."""
    return hashlib.sha256(vectors.detach().float().cpu().numpy().tobytes()).hexdigest()[:12]


def train_embedding(request: TrainEmbeddingRequest, *, model, folders: TrainingFolders, job: Job,
                    clip_skip: int = 1, emphasis: str = "Original", filename_word_regex: str = "",
                    filename_join_string: str = " ") -> TrainingResult:
    """Run the training on the worker (it owns the model). Everything that can be wrong with the request, the
    embedding or the dataset is raised as a JobError before the first step."""
    pipeline = model.pipeline
    if model.spec.family.xl:
        raise JobError("textual inversion training here supports SD 1.x and 2.x checkpoints (as A1111's): "
                       f"'{model.info.title}' is SDXL")
    if model.spec.inpainting:
        raise JobError(f"'{model.info.title}' is an inpainting checkpoint: train on its base model")
    path = find_embedding_file(folders.embeddings, request.embedding_name)
    embedding = load_embedding(path)
    problem = fit_problem(embedding, encoder_widths(pipeline))
    if problem:
        raise JobError(f"embedding '{embedding.name}' does not fit '{model.info.title}': {problem}")
    start = int(embedding.step or 0)
    result = TrainingResult("embedding", embedding.name, path, start, None)
    if start >= request.steps:
        job.textinfo = "Model has already been trained beyond specified max steps"
        return result

    lr_schedule = LearnRateScheduler(request.learn_rate, request.steps, start)
    clip = {"value": torch.nn.utils.clip_grad_value_, "norm": torch.nn.utils.clip_grad_norm_}.get(
        request.clip_grad_mode)
    clip_schedule = LearnRateScheduler(request.clip_grad_value, request.steps, start) if clip else None
    try:
        entries = datasets.read_dataset(Path(request.data_root).expanduser(), width=request.training_width,
                                        height=request.training_height, varsize=request.varsize,
                                        use_weight=request.use_weight, filename_word_regex=filename_word_regex,
                                        filename_join_string=filename_join_string)
        templates = datasets.read_template(folders.templates / request.template_filename)
    except datasets.DatasetError as error:
        raise JobError(str(error)) from None

    vectors = embedding.vectors_for(SINGLE_KEY).detach().float().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([vectors], lr=lr_schedule.learn_rate, weight_decay=0.0)
    seed = _resume(path, vectors, optimizer, request.seed)
    trained = Embedding(name=embedding.name, vectors={SINGLE_KEY: vectors}, path=path, step=start,
                        sd_checkpoint=model.info.shorthash, sd_checkpoint_name=model.info.model_name)

    log_folder = _log_folder(folders.log_root, request.log_directory, embedding.name)
    result.log_folder = log_folder
    batch_size = min(request.batch_size, len(entries))
    accumulation = datasets.effective_gradient_steps(len(entries), batch_size, request.gradient_step)
    scheduler = training_scheduler(model.scheduler_config)
    device = next(pipeline.unet.parameters()).device

    job.textinfo = f"Preparing dataset from {request.data_root}..."
    latents = _latents(pipeline.vae, entries, request.latent_sampling_method, seed)
    weights = [_loss_weight(entry, latents[index].mean.shape) if request.use_weight else None
               for index, entry in enumerate(entries)]
    orders: dict[int, list[list[int]]] = {}

    def batches_of(epoch: int) -> list[list[int]]:
        if epoch not in orders:
            orders.clear()
            orders[epoch] = datasets.batch_order(entries, batch_size, seed, epoch)
        return orders[epoch]

    batches_per_epoch = len(batches_of(0))
    steps_per_epoch = max(1, batches_per_epoch // accumulation)
    with frozen(pipeline.unet, pipeline.vae, pipeline.text_encoder), torch.enable_grad():
        for step in range(start, request.steps):
            if job.interrupted:
                result.interrupted = True
                break
            lr_schedule.apply(optimizer, step)
            if lr_schedule.finished:
                break
            encoder = TrainingTextEncoder(pipeline, model.spec.family, clip_skip=clip_skip, emphasis=emphasis,
                                          embeddings={trained.name: trained})
            step_loss = 0.0
            for part in range(accumulation):
                number = step * accumulation + part
                epoch, index = divmod(number, batches_per_epoch)
                batch = batches_of(epoch)[index]
                generator = step_generator(seed, number)
                rng = random.Random(generator.initial_seed())
                texts = [datasets.create_text(entries[i].filename_text, trained.name, templates, rng,
                                              shuffle_tags=request.shuffle_tags, tag_drop_out=request.tag_drop_out)
                         for i in batch]
                sampled = torch.stack([latents[i].sample(generator if request.latent_sampling_method == "random"
                                                         else None) for i in batch])
                weight = torch.stack([weights[i] for i in batch]) if request.use_weight else None
                cond = encoder.encode_batch(texts).to(device)
                loss = denoising_loss(pipeline.unet, scheduler, sampled, cond, generator, weight=weight) / accumulation
                loss.backward()
                step_loss += float(loss.detach())
            if clip is not None:
                clip_schedule.step(step)
                clip([vectors], clip_schedule.learn_rate)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            trained.step = step + 1
            result.step = trained.step
            result.losses.append((trained.step, step_loss))
            epoch_number, epoch_step = divmod(trained.step, steps_per_epoch)
            job.set_progress(trained.step - start, request.steps - start)
            job.textinfo = (f"Training textual inversion [Epoch {epoch_number}: {epoch_step + 1}/{steps_per_epoch}] "
                            f"loss: {step_loss:.7f}")
            _write_loss(log_folder, trained.step, steps_per_epoch, step_loss, lr_schedule.learn_rate)
            if request.save_embedding_every and trained.step % request.save_embedding_every == 0:
                every = log_folder / "embeddings" / f"{trained.name}-{trained.step}.pt"
                _save(trained, optimizer, seed, every, name=f"{trained.name}-{trained.step}")
    _save(trained, optimizer, seed, path)
    return result


def _resume(path: Path, vectors: torch.Tensor, optimizer, requested_seed: int) -> int:
    """Load the optimiser state saved with these vectors (A1111's `.optim` file); the training's seed."""
    state_file = Path(f"{path}.optim")
    if state_file.is_file():
        from modules.models import files

        try:
            saved = files.load_object(state_file)
        except Exception as error:  # noqa: BLE001 - a damaged state only loses the resume, never the embedding
            log.warning("%s could not be read (%s): the optimiser starts afresh", state_file, error)
            saved = {}
        if isinstance(saved, dict) and saved.get("hash") == vectors_hash(vectors):
            optimizer.load_state_dict(saved["optimizer_state_dict"])
            if isinstance(saved.get("seed"), int):
                return saved["seed"]
    return requested_seed if requested_seed >= 0 else random.randrange(2 ** 31)


def _save(embedding: Embedding, optimizer, seed: int, path: Path, name: str | None = None) -> None:
    """The embedding, then its optimiser state; each written atomically (a full disk keeps the last good file)."""
    import io

    from modules.images import replace_atomically

    vectors = embedding.vectors_for(SINGLE_KEY)
    named = Embedding(name=name or embedding.name, vectors={SINGLE_KEY: vectors.detach()}, path=path,
                      step=embedding.step, sd_checkpoint=embedding.sd_checkpoint,
                      sd_checkpoint_name=embedding.sd_checkpoint_name)
    try:
        save_embedding(named, path)
        buffer = io.BytesIO()
        torch.save({"hash": vectors_hash(vectors), "optimizer_state_dict": optimizer.state_dict(), "seed": seed},
                   buffer)
        replace_atomically(Path(f"{path}.optim"), buffer.getvalue())
    except OSError as error:
        from modules.jobs import StorageFull

        raise StorageFull(f"could not save the embedding {path}: {error}") from None


def _log_folder(root: Path, log_directory: str, name: str) -> Path:
    folder = Path(log_directory).expanduser()
    folder = (folder if folder.is_absolute() else root / folder) / datetime.date.today().isoformat() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _latents(vae, entries, method: str, seed: int) -> list[LatentDistribution]:
    """Each image's latents: "once" draws one sample now (seeded per image), "deterministic" takes the mean,
    "random" keeps the distribution to draw from at each step."""
    encoded = [encode(vae, entry.pixels) for entry in entries]
    if method == "random":
        return encoded
    if method == "once":
        return [LatentDistribution(mean=dist.sample(step_generator(seed, -1 - index)), std=torch.zeros_like(dist.std))
                for index, dist in enumerate(encoded)]
    return [LatentDistribution(mean=dist.mean, std=torch.zeros_like(dist.std)) for dist in encoded]


def _loss_weight(entry, latent_shape) -> torch.Tensor:
    """A1111's weight map from the PNG's alpha: resized to the latents, shifted to a minimum of 0 and scaled to a
    mean of 1 (so the loss stays comparable); all ones for an image without alpha."""
    channels, height, width = latent_shape
    if entry.alpha is None:
        return torch.ones(latent_shape)
    alpha = torch.tensor(list(entry.alpha.resize((width, height)).getdata()), dtype=torch.float32)
    weight = alpha.reshape(1, height, width).repeat(channels, 1, 1)
    weight -= weight.min()
    mean = weight.mean()
    return weight / mean if mean > 0 else torch.ones(latent_shape)


def _write_loss(folder: Path, step: int, steps_per_epoch: int, loss: float, learn_rate: float) -> None:
    """A1111's loss log: step, epoch, epoch_step, loss, learn_rate."""
    path = folder / LOSS_LOG
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        if new:
            writer.writerow(["step", "epoch", "epoch_step", "loss", "learn_rate"])
        epoch, epoch_step = divmod(step - 1, steps_per_epoch)
        writer.writerow([step, epoch, epoch_step + 1, f"{loss:.7f}", learn_rate])
