"""ControlNet training on the loaded SD 1.x, 2.x or SDXL checkpoint, on the job worker, as diffusers'
`train_controlnet.py` example trains one.

The ControlNet starts as a copy of the checkpoint's UNet encoder (`ControlNetModel.from_unet`) whose zero
convolutions (and hint encoder's last conv) are zero, so untrained it changes nothing; only it learns (AdamW with
A1111's learning-rate schedule string, gradient clipping by norm or value and gradient accumulation, through
`common.StepLoop`), the UNet, VAE and text encoders frozen. Each batch: the images' latents (sampled from the VAE
posterior), a timestep and noise, the ControlNet's residuals from the noisy latents, the prompts and the condition
images, and the UNet's denoising loss with those residuals added (`denoising`'s objective). Prompts are each
image's caption (`<image>.txt`, else its file name) or, with a template, a line of it with `[filewords]`/`[name]`
filled; `proportion_empty_prompts` of them are "" (diffusers' caption dropout).
Conditions come from a folder of condition images named as the images, or from an annotator (`controlnet_dataset`).

Files: `<ControlNet folder>/<name>.safetensors` in lllyasviel's single-file layout (`control_model.*`, float32,
metadata naming the base model and the steps), which the ControlNet loader reads; `<name>.safetensors.state` beside
it (the optimiser state, seed and step, and the digest of the file it belongs to); `<name>-<step>.safetensors` every
`save_every` steps; `<log root>/controlnet/<date>/<name>/controlnet_loss.csv`, and `images/<name>-<step>.png` every
`preview_every` steps (a txt2img with the ControlNet as saved then). Interrupting saves both; training the
same name again resumes with the same data order and draws (`dataset.batch_order`, `denoising.step_generator`)
and ends with an uninterrupted run's weights.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import logging
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modules.jobs import Job, JobError, StorageFull
from modules.training import controlnet_dataset, previews
from modules.training.checkpointing import gradient_checkpointing
from modules.training import dataset as datasets
from modules.training.common import BatchPlan, StepLoop, TrainingResult
from modules.training.denoising import encode, noised, training_scheduler
from modules.training.learn_schedule import LearnRateScheduler, parse_schedule
from modules.training.requests import (MAX_BATCH_SIZE, MAX_TRAINING_SIDE, MAX_TRAINING_STEPS, plain_file_name,
                                       schedule_text)
from modules.training.text_conditioning import TrainingTextEncoder, encode_conditioning_batch, frozen, sdxl_time_ids

log = logging.getLogger(__name__)

PREFIX = "control_model."
STATE_SUFFIX = ".state"   # after the file's own name: no model suffix, so the folder's listing passes it by
LOSS_LOG = "controlnet_loss.csv"
TRAINABLE_FAMILIES = ("sd1", "sd2", "sdxl")
_METADATA_STEPS = "controlnet_training_steps"   # in the file's metadata: trained here, and how far


class TrainControlNetRequest(BaseModel):
    """A ControlNet training; the file is `<ControlNet folder>/<name>.safetensors`. The conditions come from
    `condition_folder` (relative: under `data_root`) or from the preprocessor `annotator`, exactly one of them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    data_root: str = Field(min_length=1)
    condition_folder: str = ""
    annotator: str = ""
    template_filename: str = ""   # none: each image's caption is its prompt
    proportion_empty_prompts: float = Field(0.0, ge=0.0, le=1.0)
    learn_rate: str = "1e-5"
    weight_decay: float = Field(1e-2, ge=0.0, le=1.0)
    clip_grad_mode: Literal["disabled", "value", "norm"] = "norm"   # A1111's gradient clipping
    clip_grad_value: str = "1.0"   # a schedule string like learn_rate's (diffusers' example: norm 1.0)
    batch_size: int = Field(1, ge=1, le=MAX_BATCH_SIZE)
    gradient_step: int = Field(1, ge=1, le=1000)
    width: int = Field(512, ge=8, le=MAX_TRAINING_SIDE, multiple_of=8)
    height: int = Field(512, ge=8, le=MAX_TRAINING_SIDE, multiple_of=8)
    steps: int = Field(1000, ge=1, le=MAX_TRAINING_STEPS)
    save_every: int = Field(0, ge=0)   # also `<name>-<step>.safetensors` every N steps
    preview_every: int = Field(0, ge=0)                  # a preview image every N steps (0: none)
    preview_prompt: str = Field("", max_length=10_000)   # "": the first image's prompt
    gradient_checkpointing: bool = False                 # less memory, more time per step
    seed: int = -1                     # -1: random (kept in the resume state)
    overwrite: bool = False            # start afresh even where a ControlNet of this name was trained

    @field_validator("name")
    @classmethod
    def _plain_file_name(cls, name: str) -> str:
        return plain_file_name(name)

    @field_validator("template_filename")
    @classmethod
    def _template_name(cls, name: str) -> str:
        if name and (name != name.strip() or "/" in name or "\\" in name or name.startswith(".")):
            raise ValueError(f"{name!r} is not the name of a file in the templates folder")
        return name

    @field_validator("learn_rate", "clip_grad_value", mode="before")
    @classmethod
    def _number_as_text(cls, value):
        return schedule_text(value)

    @field_validator("learn_rate", "clip_grad_value")
    @classmethod
    def _schedule(cls, text: str) -> str:
        parse_schedule(text, MAX_TRAINING_STEPS)   # a ScheduleError (ValueError) naming the text
        return text

    @field_validator("annotator")
    @classmethod
    def _known_preprocessor(cls, name: str) -> str:
        from modules.controlnet.preprocessors import PREPROCESSORS

        known = {key.lower(): p.name for p in PREPROCESSORS for key in (p.name, *p.aliases)}
        if name.strip() and name.strip().lower() not in known:
            raise ValueError(f"unknown preprocessor {name!r}; choose one of {sorted(p.name for p in PREPROCESSORS)}")
        return known.get(name.strip().lower(), "")

    @model_validator(mode="after")
    def _one_source_of_conditions(self) -> TrainControlNetRequest:
        if bool(self.condition_folder.strip()) == bool(self.annotator):
            raise ValueError("give either condition_folder (condition images named as the images) or annotator "
                             "(a preprocessor making them), one of the two")
        return self


@dataclass
class ControlNetFolders:
    controlnets: Path   # the ControlNet folder: the file, its state and the every-N-steps files
    templates: Path     # prompt templates (`template_filename`)
    log_root: Path      # the loss log goes under <log_root>/controlnet/<date>/<name>/


def train_controlnet(request: TrainControlNetRequest, *, model, folders: ControlNetFolders, job: Job,
                     annotate: controlnet_dataset.Annotate | None = None,
                     generate: previews.Generate | None = None) -> TrainingResult:
    """Run the training on the worker (it owns `model`, a LoadedModel). `annotate` makes the conditions when the
    request names an annotator (`Preprocessors.run`). Everything wrong with the request, the model, the ControlNet
    being resumed or the dataset is raised as a JobError before the first step, with nothing written. With
    `generate` (the generation core), a preview every `preview_every` steps: the ControlNet is saved (with its
    resumable state) and a txt2img generation with a unit of it, guided by the first image's condition, shows it
    as it is."""
    pipeline, family = model.pipeline, model.spec.family
    if family.id not in TRAINABLE_FAMILIES or getattr(model.spec, "inpainting", False):
        raise JobError(f"ControlNet training needs an SD 1.x, 2.x or SDXL base checkpoint: '{model.info.title}' is "
                       f"{'an inpainting' if getattr(model.spec, 'inpainting', False) else family.label} model")
    path = folders.controlnets / f"{request.name}.safetensors"
    start = 0 if request.overwrite or not path.exists() else _trained_steps(path)
    result = TrainingResult("controlnet", request.name, path, start, None)
    if start >= request.steps:
        job.textinfo = "Model has already been trained beyond specified max steps"
        return result
    state = _saved_state(path) if start else {}
    seed = int(state["seed"]) if state else (request.seed if request.seed >= 0 else random.randrange(2 ** 31))
    controlnet = _initial_controlnet(path, pipeline.unet, family, resume=start > 0, seed=seed)
    lr_schedule = LearnRateScheduler(request.learn_rate, request.steps, start)
    entries, templates, conditions = _read_data(request, folders, annotate)

    device = next(pipeline.unet.parameters()).device
    controlnet.to(device).train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=lr_schedule.learn_rate,
                                  weight_decay=request.weight_decay)
    if state:
        optimizer.load_state_dict(state["optimizer_state_dict"])
    folder = folders.log_root / "controlnet" / datetime.date.today().isoformat() / request.name
    folder.mkdir(parents=True, exist_ok=True)
    result.log_folder = folder

    job.textinfo = f"Preparing dataset from {request.data_root}..."
    latents = [encode(pipeline.vae, entry.pixels) for entry in entries]
    scheduler = training_scheduler(model.scheduler_config)
    plan = BatchPlan(entries, request.batch_size, request.gradient_step, seed)

    def batch_loss(number: int, batch: list[int], generator: torch.Generator) -> torch.Tensor:
        rng = random.Random(generator.initial_seed())
        texts = [_prompt(entries[i], request, templates, rng) for i in batch]
        sampled = torch.stack([latents[i].sample(generator) for i in batch])
        hints = torch.stack([conditions[i] for i in batch])
        with torch.no_grad():
            text = encode_conditioning_batch(TrainingTextEncoder(pipeline, family, emphasis="None"), texts)
        added = None
        if family.xl:
            added = {"text_embeds": text.pooled.to(device),
                     "time_ids": sdxl_time_ids([entries[i].size for i in batch]).to(device)}
        return controlnet_loss(controlnet, pipeline.unet, scheduler, sampled, text.embeds.to(device), hints,
                               generator, added_cond_kwargs=added)

    saver = _Saver(controlnet, optimizer, model, request, seed)

    def after_step(step: int) -> None:
        if request.save_every and step % request.save_every == 0 and step < request.steps:
            saver.save(step, folders.controlnets / f"{request.name}-{step:06d}.safetensors", with_state=False)
        if generate is not None and request.preview_every and step % request.preview_every == 0:
            saver.save(step, path, with_state=True)   # what the preview's unit loads
            unit = {"model": request.name, "module": "none", "resize_mode": "Just Resize",
                    "image": controlnet_dataset.condition_image(conditions[0])}
            prompt = request.preview_prompt or _prompt(entries[0], request, templates, random.Random(seed),
                                                       dropout=False)
            previews.make_preview(generate, previews.PreviewSettings.at_training_size(request.width, request.height),
                                  prompt, job, folder / "images", result, extra_fields={"controlnet_units": [unit]})

    loop = StepLoop(request, job, result, optimizer, lr_schedule, list(controlnet.parameters()), plan,
                    folder / LOSS_LOG, f"Training ControlNet {request.name}", batch_loss, after_step)
    components = [getattr(pipeline, name, None) for name in ("unet", "vae", "text_encoder", "text_encoder_2")]
    checkpointing = gradient_checkpointing(controlnet, pipeline.unet) if request.gradient_checkpointing \
        else nullcontext()
    with frozen(*components), torch.enable_grad(), checkpointing:
        loop.run(start)
    saver.save(result.step, path, with_state=True)
    return result


def controlnet_loss(controlnet, unet, scheduler, latents: torch.Tensor, encoder_hidden_states: torch.Tensor,
                    hints: torch.Tensor, generator: torch.Generator, *,
                    added_cond_kwargs: dict | None = None) -> torch.Tensor:
    """`denoising.denoising_loss` with the ControlNet's residuals added to the UNet's: a timestep and noise drawn
    from `generator`, the MSE to the noise (or velocity). Gradients reach only what requires them (the ControlNet)."""
    device, dtype = encoder_hidden_states.device, unet.dtype
    batch = noised(scheduler, latents, generator, device)
    kwargs = {"added_cond_kwargs": added_cond_kwargs} if added_cond_kwargs else {}
    control_dtype = controlnet.dtype
    down, mid = controlnet(batch.noisy.to(control_dtype), batch.timesteps,
                           encoder_hidden_states=encoder_hidden_states.to(control_dtype),
                           controlnet_cond=hints.to(device=device, dtype=control_dtype), return_dict=False, **kwargs)
    prediction = unet(batch.noisy.to(dtype), batch.timesteps, encoder_hidden_states.to(dtype),
                      down_block_additional_residuals=[residual.to(dtype) for residual in down],
                      mid_block_additional_residual=mid.to(dtype), **kwargs).sample
    return ((prediction.float() - batch.target.float()) ** 2).mean()


# --------------------------------------------------------------------------- checks before any step

def _initial_controlnet(path: Path, unet, family, *, resume: bool, seed: int):
    """The ControlNet to train: the one saved at `path` (trained here) when resuming, else a new one from the
    UNet, its hint encoder's random layers drawn from the training's seed; a ControlNet for another model family,
    or that does not fit the UNet, is a JobError."""
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet)   # float32, on the CPU
    if not resume:
        return controlnet
    from modules.controlnet.models import ControlNetLoadError, load_controlnet

    try:
        saved, saved_family = load_controlnet(path, torch.float32)
    except ControlNetLoadError as error:
        raise JobError(f"The ControlNet {path.name} being resumed cannot be read ({error}): set overwrite to "
                       "start afresh, or choose another name") from None
    if saved_family.id != family.id:
        raise JobError(f"The ControlNet '{path.stem}' was trained for {saved_family.label}; the loaded checkpoint "
                       f"is {family.label}: load a checkpoint of that family to resume, or choose another name")
    try:
        controlnet.load_state_dict(saved.state_dict())
    except RuntimeError as error:
        raise JobError(f"The ControlNet {path.name} does not fit the loaded checkpoint's UNet ({error}): choose "
                       "another name") from None
    return controlnet


def _trained_steps(path: Path) -> int:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
    except Exception as error:  # noqa: BLE001 - not a safetensors file at all
        raise JobError(f"{path} cannot be read ({error}): set overwrite or choose another name") from None
    steps = metadata.get(_METADATA_STEPS, "")
    if not steps.isdigit():
        raise JobError(f"A ControlNet named '{path.stem}' already exists ({path}) and was not trained here: choose "
                       "another name, or set overwrite to replace it")
    return int(steps)


def _read_data(request: TrainControlNetRequest, folders: ControlNetFolders, annotate):
    """(entries, template lines or None, conditions); a JobError naming what is unusable."""
    try:
        entries = datasets.read_dataset(Path(request.data_root).expanduser(), width=request.width,
                                        height=request.height)
        templates = (datasets.read_template(folders.templates / request.template_filename)
                     if request.template_filename else None)
        if request.annotator:
            if annotate is None:
                raise JobError(f"The annotator {request.annotator} is not available here: give a condition folder")
            conditions = controlnet_dataset.annotate_conditions(entries, annotate, request.annotator)
        else:
            conditions = controlnet_dataset.read_conditions(
                entries, controlnet_dataset.condition_folder(request.data_root, request.condition_folder))
    except datasets.DatasetError as error:
        raise JobError(str(error)) from None
    return entries, templates, conditions


def _prompt(entry: datasets.DatasetEntry, request: TrainControlNetRequest, templates, rng: random.Random, *,
            dropout: bool = True) -> str:
    text = (datasets.create_text(entry.filename_text, request.name, templates, rng) if templates
            else entry.filename_text)
    # caption dropout as diffusers' example: the ControlNet learns to follow the condition without a prompt
    dropped = dropout and request.proportion_empty_prompts and rng.random() < request.proportion_empty_prompts
    return "" if dropped else text


# --------------------------------------------------------------------------- saving and resuming

def state_path(path: Path) -> Path:
    return Path(f"{path}{STATE_SUFFIX}")


def _digest(path: Path) -> str:
    from modules.untrusted import user_files

    with user_files.open_regular(path) as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _saved_state(path: Path) -> dict:
    """The state saved with this very file (its digest recorded in it), else {}: the optimiser starts afresh."""
    saved = state_path(path)
    if not saved.is_file():
        return {}
    from modules.models import files

    try:
        state = files.load_object(saved)
    except Exception as error:  # noqa: BLE001 - a damaged state only loses the optimiser, never the ControlNet
        log.warning("%s could not be read (%s): the optimiser starts afresh", saved, error)
        return {}
    if (isinstance(state, dict) and state.get("digest") == _digest(path) and isinstance(state.get("seed"), int)
            and isinstance(state.get("optimizer_state_dict"), dict)):
        return state
    log.warning("%s belongs to another version of %s: the optimiser starts afresh", saved, path.name)
    return {}


class _Saver:
    """Writes the ControlNet file (and its state) as the training stands, each atomically."""

    def __init__(self, controlnet, optimizer, model, request: TrainControlNetRequest, seed: int):
        self.controlnet, self.optimizer, self.model, self.request, self.seed = (controlnet, optimizer, model,
                                                                                request, seed)

    def file_bytes(self, step: int) -> bytes:
        import safetensors.torch

        from modules.controlnet.ldm_layout import controlnet_to_ldm

        tensors = {PREFIX + key: value.detach().to("cpu", torch.float32).contiguous()
                   for key, value in controlnet_to_ldm(self.controlnet).items()}
        info, request = self.model.info, self.request
        metadata = {_METADATA_STEPS: str(step), "base_model": info.model_name, "base_model_hash": info.shorthash or "",
                    "family": self.model.spec.family.id, "seed": str(self.seed), "resolution":
                    f"{request.width}x{request.height}", "learn_rate": request.learn_rate,
                    "conditions": request.annotator or "folder"}
        return safetensors.torch.save(tensors, metadata=metadata)

    def save(self, step: int, path: Path, *, with_state: bool) -> None:
        from modules.images import replace_atomically

        data = self.file_bytes(step)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_atomically(path, data)
            if with_state:
                buffer = io.BytesIO()
                torch.save({"digest": hashlib.sha256(data).hexdigest(), "seed": self.seed, "step": step,
                            "optimizer_state_dict": self.optimizer.state_dict()}, buffer)
                replace_atomically(state_path(path), buffer.getvalue())
        except OSError as error:
            raise StorageFull(f"could not save the ControlNet {path}: {error}") from None

