"""LoRA training (and DreamBooth-LoRA) on the loaded SD 1.x, 2.x or SDXL checkpoint, on the job worker.

peft's LoRA layers are put into the UNet's attention (to_q/k/v/out) or all its blocks' linear layers, and, when
asked, the text encoders' (self-attention, or all linear layers of their transformer); only they learn (AdamW, or
bitsandbytes' 8-bit AdamW on CUDA), the UNet's and text encoders' learning rates apart, with a diffusers scheduler
and warm-up. The loss is `denoising`'s objective with kohya's extras: min-SNR-γ weighting and noise offset.
Images are squashed to `resolution`² or, with bucketing, cropped to the bucket of their aspect ratio (area at most
`resolution`², sides multiples of 64, or 8 under 512); a batch holds images of one bucket. DreamBooth's prior
preservation adds a batch of class images with the class prompt to every batch, its loss weighted.

Files: `<Lora folder>/<name>.safetensors` (kohya's layout, `lora_files`), with `<name>.safetensors.state` beside it
(a torch pickle of tensors and numbers: the adapter's float32 weights, optimiser, learning-rate scheduler and loss
scaler states, the seed, the step and what the LoRA was made as); `<name>-<step>.safetensors` every `save_every`
steps; `<log root>/lora/<date>/<name>/lora_loss.csv`. Interrupting saves both files; training the same name again
resumes from the state with the same data order and draws (`dataset.batch_order`, `denoising.step_generator`) and
ends with the weights of an uninterrupted run. The model is left as it was: the layers are taken out after.
"""
from __future__ import annotations

import io
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from modules.jobs import Job, JobError, StorageFull
from modules.training import dataset as datasets, previews
from modules.training import lora_files
from modules.training.checkpointing import gradient_checkpointing
from modules.training.denoising import LatentDistribution, encode, noised, step_generator, training_scheduler
from modules.training.lora_requests import TrainLoraRequest
from modules.training.text_conditioning import TrainingTextEncoder, encode_conditioning_batch, frozen, sdxl_time_ids
from modules.training.common import BatchPlan, TrainingResult, begin_steps, log_folder, record_step


ADAPTER = "lora_training"
STATE_SUFFIX = ".state"
LOSS_LOG = "lora_loss.csv"
TRAINABLE_FAMILIES = ("sd1", "sd2", "sdxl")
_UNET_ATTENTION = (".to_q", ".to_k", ".to_v", ".to_out.0")
_TEXT_ATTENTION = (".q_proj", ".k_proj", ".v_proj", ".out_proj")
# what a resumed training must share with the saved state
_SHAPE_FIELDS = ("rank", "network_alpha", "target", "train_text_encoder", "optimizer")


@dataclass
class LoraFolders:
    loras: Path        # the Lora folder (`--lora-dir`): the file, its state and the every-N-steps files
    log_root: Path     # the loss log goes under <log_root>/lora/<date>/<name>/


def lora_path(folders: LoraFolders, name: str) -> Path:
    return folders.loras / f"{name}.safetensors"


def state_path(path: Path) -> Path:
    return Path(f"{path}{STATE_SUFFIX}")


def train_lora(request: TrainLoraRequest, *, model, folders: LoraFolders, job: Job,
               before_class_images: Callable[[int], None] | None = None,
               generate: previews.Generate | None = None) -> TrainingResult:
    """Run the training on the worker (it owns `model`, a LoadedModel). Everything wrong with the request, the
    model, the saved state or the datasets is raised as a JobError before the first step. `before_class_images`
    gets the training seed once the rest is found good, before the class folder is read (`runs` generates the
    missing class images there). With `generate` (the generation core), a preview every `preview_every` steps:
    the adapter being trained is in the model, so the preview shows it as it is."""
    pipeline, family = model.pipeline, model.spec.family
    if family.id not in TRAINABLE_FAMILIES or getattr(model.spec, "inpainting", False):
        raise JobError(f"LoRA training needs an SD 1.x, 2.x or SDXL base checkpoint: '{model.info.title}' is "
                       f"{'an inpainting' if getattr(model.spec, 'inpainting', False) else family.label} model")
    device = next(pipeline.unet.parameters()).device
    autocast_dtype = _autocast_dtype(request, device)
    optimizer_class = _optimizer_class(request, device)
    path = lora_path(folders, request.name)
    state = None if request.overwrite else _read_state(path, request, family)   # overwrite: start afresh
    start = int(state["step"]) if state else 0
    result = TrainingResult("lora", request.name, path, start, None)
    if start >= request.steps:
        job.textinfo = "Model has already been trained beyond specified max steps"
        return result
    entries = _dataset(request.data_root, request)
    seed = int(state["seed"]) if state else (request.seed if request.seed >= 0 else random.randrange(2 ** 31))
    if before_class_images is not None:
        before_class_images(seed)
    class_entries = _dataset(request.class_data_root, request) if request.class_data_root.strip() else []
    started_at = float(state["started_at"]) if state else time.time()
    data = BatchPlan(entries, request.batch_size, request.gradient_accumulation, seed)
    # the class images' own order; their draws come from batch numbers below 0 (see _batch_loss)
    class_data = BatchPlan(class_entries, request.batch_size, 1, seed + 1) if class_entries else None
    folder = log_folder(folders.log_root, "lora", request.name)
    result.log_folder = folder

    job.textinfo = f"Preparing dataset from {request.data_root}..."
    latents = [encode(pipeline.vae, entry.pixels) for entry in entries]
    class_latents = [encode(pipeline.vae, entry.pixels) for entry in class_entries]
    scheduler = training_scheduler(model.scheduler_config)
    components = [getattr(pipeline, name, None) for name in ("unet", "vae", "text_encoder", "text_encoder_2")]
    with frozen(*components), torch.enable_grad(), _adapter(pipeline, request, family, seed) as groups:
        parameters = [parameter for group in groups for parameter in group["params"]]
        optimizer = optimizer_class(groups, weight_decay=request.weight_decay)
        from diffusers.optimization import get_scheduler

        lr_scheduler = get_scheduler(request.lr_scheduler, optimizer, num_warmup_steps=request.lr_warmup_steps,
                                     num_training_steps=request.steps)
        # float16 gradients underflow without loss scaling; bfloat16 and float32 need none
        scaler = torch.amp.GradScaler(device.type, enabled=torch.float16 in (autocast_dtype, pipeline.unet.dtype))
        if state:
            _restore(pipeline, family, state, optimizer, lr_scheduler, scaler)
        dataset = lora_files.dataset_metadata(request.data_root, [entry.filename_text for entry in entries],
                                              bucket_counts(entries) if request.bucketing else None)
        saving = _Saver(path, pipeline, family, request, model, seed, started_at, data, dataset, len(class_entries),
                        optimizer, lr_scheduler, scaler)
        encode_text = _text_encoding(pipeline, family, request.train_text_encoder)
        title = f"Training LoRA {request.name}"
        begin_steps(job, result, title, request.steps)
        for step in range(start, request.steps):
            if job.interrupted:
                result.interrupted = True
                break
            step_loss = 0.0
            for part in range(data.accumulation):
                number = step * data.accumulation + part
                with torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext():
                    loss = _batch_loss(pipeline, family, scheduler, request, encode_text, data, latents, seed,
                                       number, device)
                    if class_data is not None and request.prior_loss_weight:
                        loss = loss + request.prior_loss_weight * _batch_loss(
                            pipeline, family, scheduler, request, encode_text, class_data, class_latents, seed,
                            number, device, prompt=request.class_prompt)
                    loss = loss / data.accumulation
                scaler.scale(loss).backward()
                step_loss += float(loss.detach())
            if request.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(parameters, request.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            record_step(job, result, title, step + 1, request.steps, data.steps_per_epoch, step_loss,
                        lr_scheduler.get_last_lr()[0], folder / LOSS_LOG)
            if request.save_every and result.step % request.save_every == 0 and result.step < request.steps:
                saving.save(result.step, folders.loras / f"{request.name}-{result.step:06d}.safetensors",
                            with_state=False)
            if generate is not None and request.preview_every and result.step % request.preview_every == 0:
                settings = previews.PreviewSettings.at_training_size(request.resolution, request.resolution)
                previews.make_preview(generate, settings, request.preview_prompt or prompt_of(entries[0], request),
                                      job, folder / "images", result)
        saving.save(result.step, path, with_state=True)
    return result


# --------------------------------------------------------------------------- checks before any step

def _autocast_dtype(request: TrainLoraRequest, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype, None for float32 throughout. It pays off on CUDA; torch autocasts on the CPU too
    (slower than float32 on most CPUs, but the same computation), so it is not refused there."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(request.mixed_precision)
    if dtype is not None and not torch.amp.is_autocast_available(device.type):
        raise JobError(f"mixed precision ({request.mixed_precision}) is not available on {device.type}: use 'no'")
    return dtype


def _optimizer_class(request: TrainLoraRequest, device: torch.device):
    if request.optimizer == "AdamW":
        return torch.optim.AdamW
    if device.type != "cuda":
        raise JobError(f"The AdamW8bit optimizer (bitsandbytes) needs a CUDA GPU; the model is on {device.type}: "
                       "use AdamW")
    try:
        import bitsandbytes
    except ImportError as error:
        raise JobError(f"The AdamW8bit optimizer needs the bitsandbytes package, which cannot be imported "
                       f"({error}): install it or use AdamW") from None
    return bitsandbytes.optim.AdamW8bit


def _read_state(path: Path, request: TrainLoraRequest, family) -> dict | None:
    """The saved state of a training of this name, checked against the request and the model; None for a new one."""
    saved = state_path(path)
    if not saved.exists():
        if path.exists():
            raise JobError(f"A LoRA named '{request.name}' already exists ({path}) and was not trained here (no "
                           f"{saved.name}): choose another name, or overwrite it (start afresh)")
        return None
    from modules.models import files

    try:
        state = files.load_object(saved)
    except Exception as error:  # noqa: BLE001 - whatever is wrong with it, the user decides what to do
        raise JobError(f"The training state {saved} cannot be read ({error}): delete it and {path.name} to start "
                       "over, or choose another name") from None
    if not isinstance(state, dict) or "adapter" not in state or "step" not in state:
        raise JobError(f"{saved} is not a LoRA training state: delete it or choose another name")
    if state.get("family") != family.id:
        raise JobError(f"The LoRA '{request.name}' is being trained on a {state.get('family')} checkpoint; the "
                       f"loaded one is {family.label} ({family.id}): load a checkpoint of that family to resume")
    for name in _SHAPE_FIELDS:
        if state.get(name) != getattr(request, name):
            raise JobError(f"The LoRA '{request.name}' was started with {name}={state.get(name)!r}, this request "
                           f"asks {getattr(request, name)!r}: resume with the same value, choose another name, or "
                           "start afresh (overwrite)")
    return state


def _dataset(folder: str, request: TrainLoraRequest) -> list[datasets.DatasetEntry]:
    try:
        entries = datasets.read_dataset(Path(folder).expanduser(), width=request.resolution,
                                        height=request.resolution, varsize=request.bucketing)
    except datasets.DatasetError as error:
        raise JobError(str(error)) from None
    if request.bucketing:
        entries = [to_bucket(entry, bucket_size(*entry.size, request.resolution)) for entry in entries]
    datasets.log_buckets(entries)
    return entries


# --------------------------------------------------------------------------- buckets, batches, prompts

def bucket_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The bucket (width, height) of an image: its aspect ratio, an area of at most resolution², sides multiples
    of 64 (kohya's bucket step; 8 under 512, for small trainings)."""
    step = 64 if resolution >= 512 else 8
    aspect = width / height
    ideal_width = (resolution * resolution * aspect) ** 0.5
    return (max(step, int(ideal_width // step) * step), max(step, int(ideal_width / aspect // step) * step))


def to_bucket(entry: datasets.DatasetEntry, size: tuple[int, int]) -> datasets.DatasetEntry:
    """The image scaled to cover the bucket and cropped to it about its centre."""
    if tuple(entry.size) == tuple(size):
        return entry
    width, height = size
    _, old_height, old_width = entry.pixels.shape
    scale = max(width / old_width, height / old_height)
    scaled = (max(height, round(old_height * scale)), max(width, round(old_width * scale)))
    pixels = torch.nn.functional.interpolate(entry.pixels[None], size=scaled, mode="bicubic", antialias=True,
                                             align_corners=False)[0].clamp(-1, 1)
    top, left = (scaled[0] - height) // 2, (scaled[1] - width) // 2
    return replace(entry, pixels=pixels[:, top:top + height, left:left + width].contiguous(), size=(width, height))


def bucket_counts(entries: list[datasets.DatasetEntry]) -> dict[str, int]:
    """How many images each bucket holds ("WxH": count), for the file's metadata."""
    counts: dict[str, int] = {}
    for entry in entries:
        key = f"{entry.size[0]}x{entry.size[1]}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def prompt_of(entry: datasets.DatasetEntry, request: TrainLoraRequest) -> str:
    """The instance prompt and the image's caption, joined by ", " (either may be absent)."""
    parts = [request.instance_prompt.strip(), entry.filename_text.strip() if request.use_captions else ""]
    return ", ".join(part for part in parts if part)


# --------------------------------------------------------------------------- the loss

def _text_encoding(pipeline, family, train_text_encoder: bool):
    """texts → Conditioning; with gradients only when the text encoders' LoRA learns."""
    def encode_texts(texts: list[str]):
        encoder = TrainingTextEncoder(pipeline, family, emphasis="None")   # captions are plain text, as kohya's
        with nullcontext() if train_text_encoder else torch.no_grad():
            return encode_conditioning_batch(encoder, texts)
    return encode_texts


def _batch_loss(pipeline, family, scheduler, request: TrainLoraRequest, encode_text, data: BatchPlan,
                latents: list[LatentDistribution], seed: int, number: int, device, prompt: str | None = None):
    """One batch's loss; every draw (latent samples, caption dropout, timesteps, noise) from its step generator:
    the instance images' batch `number`'s, the class images' (`prompt` given) that of -1 - number."""
    batch = data.batch(number)
    generator = step_generator(seed, number if prompt is None else -1 - number)
    rng = random.Random(generator.initial_seed())
    texts = [prompt if prompt is not None else prompt_of(data.entries[index], request) for index in batch]
    texts = [("" if request.caption_dropout and rng.random() < request.caption_dropout else text) for text in texts]
    sampled = torch.stack([latents[index].sample(generator) for index in batch])
    conditioning = encode_text(texts)
    added = None
    if family.xl:
        added = {"text_embeds": conditioning.pooled.to(device),
                 "time_ids": sdxl_time_ids([data.entries[index].size for index in batch]).to(device)}
    return lora_loss(pipeline.unet, scheduler, sampled, conditioning.embeds.to(device), generator,
                     min_snr_gamma=request.min_snr_gamma, noise_offset=request.noise_offset, added_cond_kwargs=added)


def lora_loss(unet, scheduler, latents: torch.Tensor, encoder_hidden_states: torch.Tensor,
              generator: torch.Generator, *, min_snr_gamma: float = 0.0, noise_offset: float = 0.0,
              added_cond_kwargs: dict | None = None) -> torch.Tensor:
    """`denoising.denoising_loss` with kohya's noise offset (a per-image, per-channel constant added to the
    noise, so the model learns to change an image's mean brightness) and min-SNR-γ weighting (each image's error
    weighted by min(SNR, γ)/SNR, or /(SNR+1) for v-prediction, so easy low-noise steps do not dominate)."""
    device, dtype = encoder_hidden_states.device, unet.dtype
    batch = noised(scheduler, latents, generator, device, noise_offset=noise_offset)
    kwargs = {"added_cond_kwargs": added_cond_kwargs} if added_cond_kwargs else {}
    prediction = unet(batch.noisy.to(dtype), batch.timesteps, encoder_hidden_states.to(dtype), **kwargs).sample
    error = ((prediction.float() - batch.target.float()) ** 2).mean(dim=tuple(range(1, latents.ndim)))
    if min_snr_gamma:
        alphas = scheduler.alphas_cumprod.to(device)[batch.timesteps].float()
        snr = alphas / (1 - alphas)
        error = error * snr.clamp(max=min_snr_gamma) / (snr + 1 if batch.v_prediction else snr)
    return error.mean()


# --------------------------------------------------------------------------- the adapter

def _target_names(model: torch.nn.Module, component: str, target: str) -> list[str]:
    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    if component == "unet":
        if target == "attention":
            return [name for name in linear if name.endswith(_UNET_ATTENTION) and (".attn1." in name or
                                                                                   ".attn2." in name)]
        # the blocks' layers (attention, feed-forward, projections, resnets' time embedding), not the time and
        # class embeddings the whole network shares
        return [name for name in linear if name.startswith(("down_blocks.", "mid_block.", "up_blocks."))]
    layers = [name for name in linear if ".layers." in name]
    if target == "attention":
        return [name for name in layers if ".self_attn." in name and name.endswith(_TEXT_ATTENTION)]
    return layers


@contextmanager
def _adapter(pipeline, request: TrainLoraRequest, family, seed: int):
    """peft's LoRA layers in the UNet (and text encoders), float32, initialised from the seed; yields the
    optimiser's parameter groups. Afterwards the layers are taken out again (the original modules back)."""
    from diffusers.utils import recurse_remove_peft_layers
    from peft import LoraConfig, inject_adapter_in_model

    components = ["unet"] + ([name for name in lora_files.encoder_prefixes(family) if name != "unet"]
                             if request.train_text_encoder else [])
    groups = []
    had_config = {name for name in components if hasattr(getattr(pipeline, name), "peft_config")}
    try:
        for component in components:
            model = getattr(pipeline, component)
            config = LoraConfig(r=request.rank, lora_alpha=request.network_alpha, lora_dropout=0.0,
                                target_modules=_target_names(model, component, request.target))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                inject_adapter_in_model(config, model, adapter_name=ADAPTER)
            parameters = [parameter for name, parameter in model.named_parameters() if f".{ADAPTER}." in name]
            for parameter in parameters:
                parameter.data = parameter.data.float()
                parameter.requires_grad_(True)
            lr = request.unet_lr if component == "unet" else request.text_encoder_lr
            groups.append({"params": parameters, "lr": lr})
        checkpointed = [getattr(pipeline, name) for name in components]
        with gradient_checkpointing(*checkpointed) if request.gradient_checkpointing else nullcontext():
            yield groups
    finally:
        for component in components:
            model = getattr(pipeline, component)
            recurse_remove_peft_layers(model)
            # peft leaves its config behind, which diffusers would take for a loaded LoRA
            if component in had_config:
                model.peft_config.pop(ADAPTER, None)
            elif hasattr(model, "peft_config"):
                del model.peft_config


# --------------------------------------------------------------------------- saving and resuming

def _adapter_weights(pipeline, family) -> dict[str, torch.Tensor]:
    weights = {}
    for component, name, layer in lora_files.trained_layers(pipeline, ADAPTER, family):
        weights[f"{component}.{name}.down"] = layer.lora_A[ADAPTER].weight.detach().float().cpu().clone()
        weights[f"{component}.{name}.up"] = layer.lora_B[ADAPTER].weight.detach().float().cpu().clone()
    return weights


def _restore(pipeline, family, state: dict, optimizer, lr_scheduler, scaler) -> None:
    saved = state["adapter"]
    layers = lora_files.trained_layers(pipeline, ADAPTER, family)
    if len(saved) != 2 * len(layers):
        raise JobError(f"The training state has {len(saved) // 2} LoRA layers, the model {len(layers)}: it was made "
                       "on another checkpoint; choose another name")
    with torch.no_grad():
        for component, name, layer in layers:
            for part, module in (("down", layer.lora_A[ADAPTER]), ("up", layer.lora_B[ADAPTER])):
                tensor = saved.get(f"{component}.{name}.{part}")
                if tensor is None or tensor.shape != module.weight.shape:
                    raise JobError(f"The training state does not fit this checkpoint ({component}.{name}): "
                                   "choose another name")
                module.weight.copy_(tensor)
    optimizer.load_state_dict(state["optimizer_state"])
    lr_scheduler.load_state_dict(state["lr_scheduler_state"])
    if state.get("scaler_state"):
        scaler.load_state_dict(state["scaler_state"])


class _Saver:
    """Writes the LoRA file (and its training state) as the training stands."""

    def __init__(self, path, pipeline, family, request, model, seed, started_at, data: BatchPlan,
                 dataset: dict[str, str], class_images: int, optimizer, lr_scheduler, scaler):
        self.path, self.pipeline, self.family, self.request, self.model = path, pipeline, family, request, model
        self.seed, self.started_at, self.data, self.dataset = seed, started_at, data, dataset
        self.class_images = class_images
        self.optimizer, self.lr_scheduler, self.scaler = optimizer, lr_scheduler, scaler

    def metadata(self, step: int, epoch: int) -> dict[str, str]:
        request, info = self.request, self.model.info
        return lora_files.training_metadata(
            name=request.name, family=self.family,
            v_prediction=self.model.scheduler_config.get("prediction_type") == "v_prediction", rank=request.rank,
            alpha=request.network_alpha, steps=step, epoch=epoch, dataset=self.dataset,
            resolution=(request.resolution, request.resolution), batch_size=self.data.batch_size,
            learning_rate=request.unet_lr, unet_lr=request.unet_lr,
            text_encoder_lr=request.text_encoder_lr if request.train_text_encoder else None,
            lr_scheduler=request.lr_scheduler, lr_warmup_steps=request.lr_warmup_steps,
            optimizer=request.optimizer, seed=self.seed, min_snr_gamma=request.min_snr_gamma,
            noise_offset=request.noise_offset, caption_dropout=request.caption_dropout,
            gradient_accumulation=request.gradient_accumulation, mixed_precision=request.mixed_precision,
            gradient_checkpointing=request.gradient_checkpointing, model_name=info.model_name,
            model_hash=info.oldhash or "",
            model_sha256=info.sha256 or "", started_at=self.started_at, class_images=self.class_images,
            prior_loss_weight=request.prior_loss_weight if self.class_images else 0.0)

    def state(self, step: int) -> bytes:
        request = self.request
        state = {"step": step, "seed": self.seed, "family": self.family.id, "started_at": self.started_at,
                 **{name: getattr(request, name) for name in _SHAPE_FIELDS},
                 "adapter": _adapter_weights(self.pipeline, self.family),
                 "optimizer_state": self.optimizer.state_dict(), "lr_scheduler_state": self.lr_scheduler.state_dict(),
                 "scaler_state": self.scaler.state_dict() if self.scaler.is_enabled() else None}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    def save(self, step: int, path: Path, *, with_state: bool) -> None:
        """The file (and, for the training's own file, its state first); a full disk keeps the last good ones."""
        from modules.images import replace_atomically

        # the epoch the last step was in, counted from 1 (kohya's ss_epoch)
        epoch = -(-step * self.data.accumulation // self.data.batches_per_epoch)
        tensors = lora_files.kohya_state_dict(self.pipeline, ADAPTER, self.family,
                                              lora_files.SAVE_DTYPES[self.request.save_precision])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if with_state:
                replace_atomically(state_path(path), self.state(step))
            lora_files.save_lora(path, tensors, self.metadata(step, epoch))
        except OSError as error:
            raise StorageFull(f"could not save the LoRA {path}: {error}") from None
