"""What the textual-inversion and hypernetwork trainers share: their result and folders, the dataset and template
read before any step, the latents and loss weights, the batch plan (which images each batch of each epoch takes),
A1111's step loop (learning-rate and clipping schedules, gradient accumulation, progress, loss log), and the
optimiser state saved beside the trained file (`<file>.optim`: A1111's `hash` and `optimizer_state_dict`, plus the
training's seed) that lets an interrupted training resume to the weights an uninterrupted one ends with.
"""
from __future__ import annotations

import csv
import datetime
import io
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from modules.jobs import Job, JobError
from modules.training import dataset as datasets
from modules.training.denoising import LatentDistribution, encode, step_generator
from modules.training.learn_schedule import LearnRateScheduler

log = logging.getLogger(__name__)


def require_sd1_or_sd2(model, kind: str) -> None:
    """A1111's trainers (textual inversion, hypernetworks) work on SD 1.x/2.x base checkpoints only."""
    if model.spec.family.xl:
        raise JobError(f"{kind} training here supports SD 1.x and 2.x checkpoints (as A1111's): "
                       f"'{model.info.title}' is SDXL")
    if model.spec.inpainting:
        raise JobError(f"'{model.info.title}' is an inpainting checkpoint: train on its base model")


@dataclass
class TrainingResult:
    """What a finished (or interrupted) training reports; `losses` holds (step, loss) for the loss chart,
    `previews` (step, file) of the preview images made."""
    kind: str
    name: str
    path: Path
    step: int
    log_folder: Path | None
    interrupted: bool = False
    losses: list[tuple[int, float]] = field(default_factory=list)
    previews: list[tuple[int, Path]] = field(default_factory=list)
    started_from: int = field(init=False)   # the step it began at: >0 when it resumed a saved training

    def __post_init__(self):
        self.started_from = self.step

    @property
    def info(self) -> str:
        """A1111's API answer text ("complete" even when interrupted, as A1111 says for its kinds; the kinds it
        does not have say where an interrupted one stopped)."""
        if self.interrupted and self.kind not in ("embedding", "hypernetwork"):
            return (f"train {self.kind} interrupted at step {self.step}: filename: {self.path} error: None "
                    "(train it again to resume)")
        return f"train {self.kind} complete: filename: {self.path} error: None"


@dataclass
class TrainingFolders:
    templates: Path
    log_root: Path
    embeddings: Path | None = None   # textual inversion: where the embedding is found


def read_training_data(request, templates: Path, filename_word_regex: str = "",
                       filename_join_string: str = " ") -> tuple[list, list[str]]:
    """The dataset's entries and the prompt template's lines; a JobError naming what is unusable."""
    try:
        entries = datasets.read_dataset(Path(request.data_root).expanduser(), width=request.training_width,
                                        height=request.training_height, varsize=request.varsize,
                                        use_weight=request.use_weight, filename_word_regex=filename_word_regex,
                                        filename_join_string=filename_join_string)
        datasets.log_buckets(entries)
        return entries, datasets.read_template(templates / request.template_filename)
    except datasets.DatasetError as error:
        raise JobError(str(error)) from None


def log_folder(root: Path, log_directory: str, name: str) -> Path:
    """A1111's `<log_directory>/<date>/<name>`; a relative log directory is under the data folder."""
    folder = Path(log_directory).expanduser()
    folder = (folder if folder.is_absolute() else root / folder) / datetime.date.today().isoformat() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def prepare_latents(vae, entries, method: str, seed: int) -> list[LatentDistribution]:
    """Each image's latents: "once" draws one sample now (seeded per image), "deterministic" takes the mean,
    "random" keeps the distribution to draw from at each step."""
    encoded = [encode(vae, entry.pixels) for entry in entries]
    if method == "random":
        return encoded
    if method == "once":
        return [LatentDistribution(mean=dist.sample(step_generator(seed, -1 - index)), std=torch.zeros_like(dist.std))
                for index, dist in enumerate(encoded)]
    return [LatentDistribution(mean=dist.mean, std=torch.zeros_like(dist.std)) for dist in encoded]


def loss_weight(entry, latent_shape) -> torch.Tensor:
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


def write_loss(folder: Path, filename: str, step: int, steps_per_epoch: int, loss: float, learn_rate: float) -> None:
    """A1111's loss log: step, epoch, epoch_step, loss, learn_rate."""
    path = folder / filename
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        if new:
            writer.writerow(["step", "epoch", "epoch_step", "loss", "learn_rate"])
        epoch, epoch_step = divmod(step - 1, steps_per_epoch)
        writer.writerow([step, epoch, epoch_step + 1, f"{loss:.7f}", learn_rate])


# --------------------------------------------------------------------------- the optimiser state (.optim)

def saved_optimizer_state(trained_file: Path, state_hash: str) -> dict:
    """The `<file>.optim` saved with these weights (its `hash` equal to `state_hash`), else {}."""
    state_file = Path(f"{trained_file}.optim")
    if not state_file.is_file():
        return {}
    from modules.models import files

    try:
        saved = files.load_object(state_file)
    except Exception as error:  # noqa: BLE001 - a damaged state only loses the resume, never the trained file
        log.warning("%s could not be read (%s): the optimiser starts afresh", state_file, error)
        return {}
    if isinstance(saved, dict) and saved.get("hash") == state_hash and isinstance(saved.get("optimizer_state_dict"),
                                                                                  dict):
        return saved
    return {}


def training_seed(saved: dict, requested: int) -> int:
    """The seed of a resumed training, else the requested one (-1: a random one)."""
    if isinstance(saved.get("seed"), int):
        return saved["seed"]
    return requested if requested >= 0 else random.randrange(2 ** 31)


def optimizer_state_bytes(state_hash: str, optimizer, seed: int, **extra) -> bytes:
    buffer = io.BytesIO()
    torch.save({"hash": state_hash, "optimizer_state_dict": optimizer.state_dict(), "seed": seed, **extra}, buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------- batches and steps

class BatchPlan:
    """Which images each batch takes: batch number n (counted from the training's start, `gradient_step` per
    optimiser step) is batch n mod len of epoch n // len, epochs ordered by `dataset.batch_order`."""

    def __init__(self, entries, batch_size: int, gradient_step: int, seed: int):
        self.entries, self.seed = entries, seed
        self.batch_size = min(batch_size, len(entries))
        self.accumulation = datasets.effective_gradient_steps(len(entries), self.batch_size, gradient_step)
        self._epoch: tuple[int, list[list[int]]] = (0, datasets.batch_order(entries, self.batch_size, seed, 0))
        self.batches_per_epoch = len(self._epoch[1])
        self.steps_per_epoch = max(1, self.batches_per_epoch // self.accumulation)

    def batch(self, number: int) -> list[int]:
        epoch, index = divmod(number, self.batches_per_epoch)
        if self._epoch[0] != epoch:
            self._epoch = (epoch, datasets.batch_order(self.entries, self.batch_size, self.seed, epoch))
        return self._epoch[1][index]


def begin_steps(job: Job, result: TrainingResult, title: str, total: int) -> None:
    """Before a training's first step: its result is what the page's live loss chart and gallery follow, and a
    resumed one says where it begins."""
    job.partial_result = result
    if result.started_from:
        job.textinfo = f"{title}: resuming from step {result.started_from} of {total}"


def record_step(job: Job, result: TrainingResult, title: str, done: int, total: int, steps_per_epoch: int,
                loss: float, learn_rate: float, loss_log: Path) -> None:
    """After optimiser step `done` (counted from 1): the result, the job's progress and line, the loss CSV."""
    result.step = done
    result.losses.append((done, loss))
    job.set_progress(done, total, first_step=result.started_from)
    job.textinfo = progress_text(title, done, total, steps_per_epoch, loss, result.started_from)
    write_loss(loss_log.parent, loss_log.name, done, steps_per_epoch, loss, learn_rate)


def progress_text(title: str, done: int, total: int, steps_per_epoch: int, loss: float, started_from: int) -> str:
    """A1111's progress line after a step ("<title> [Epoch e: i/n] loss: x", the epoch of the step just done), with
    the step out of the total, and where a resumed training began (the job's own progress counts from there)."""
    epoch, epoch_step = divmod(done - 1, steps_per_epoch)
    resumed = f", resumed from {started_from}" if started_from else ""
    return (f"{title} [Epoch {epoch}: {epoch_step + 1}/{steps_per_epoch}] loss: {loss:.7f} "
            f"(step {done}/{total}{resumed})")


@dataclass
class StepLoop:
    """A1111's training loop over optimiser steps, the same for every trainer: `batch_loss(number, batch,
    generator)` is one batch's loss (its draws from `generator`), `after_step(step)` runs once step `step` (counted
    from 1) is done, to save files."""
    request: object
    job: Job
    result: TrainingResult
    optimizer: torch.optim.Optimizer   # built with `lr_schedule.learn_rate` (a resumed one: with its saved rate)
    lr_schedule: LearnRateScheduler
    parameters: list
    plan: BatchPlan
    loss_log: Path
    title: str
    batch_loss: Callable[[int, list[int], torch.Generator], torch.Tensor]
    after_step: Callable[[int], None]

    def run(self, start: int) -> None:
        request, job, result, plan = self.request, self.job, self.result, self.plan
        lr_schedule = self.lr_schedule
        clip = {"value": torch.nn.utils.clip_grad_value_, "norm": torch.nn.utils.clip_grad_norm_}.get(
            request.clip_grad_mode)
        clip_schedule = LearnRateScheduler(request.clip_grad_value, request.steps, start,
                                           what="Clipping gradients at") if clip else None
        begin_steps(job, result, self.title, request.steps)
        for step in range(start, request.steps):
            if job.interrupted:
                result.interrupted = True
                break
            lr_schedule.apply(self.optimizer, step)
            if lr_schedule.finished:
                break
            step_loss = 0.0
            for part in range(plan.accumulation):
                number = step * plan.accumulation + part
                loss = self.batch_loss(number, plan.batch(number), step_generator(plan.seed, number))
                loss = loss / plan.accumulation
                loss.backward()
                step_loss += float(loss.detach())
            if clip is not None:
                clip_schedule.step(step)
                clip(self.parameters, clip_schedule.learn_rate)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            record_step(job, result, self.title, step + 1, request.steps, plan.steps_per_epoch, step_loss,
                        lr_schedule.learn_rate, self.loss_log)
            self.after_step(step + 1)
