"""The file a LoRA training writes: peft's trained layers in the key layout kohya's sd-scripts writes (and A1111,
ComfyUI, diffusers' `load_lora_weights` and our own loader read), with kohya's `ss_*` metadata.

Keys: every trained module's dotted name with the dots turned into underscores, under `lora_unet_` and `lora_te_`
(SD 1.x/2.x) or `lora_te1_`/`lora_te2_` (SDXL), each with `.lora_down.weight` (peft's lora_A, rank × in),
`.lora_up.weight` (lora_B, out × rank) and a scalar `.alpha` (the scale is alpha / rank in both). The UNet's names
are diffusers' for SD 1.x/2.x (as kohya trains on the diffusers UNet there) and SGM's (`input_blocks_4_1_…`) for
SDXL (kohya trains on the SGM UNet there); text encoders start at `text_model_`.

The file is written whole to a temporary file and renamed over the old one: a full disk keeps the last good file.
Its `sshs_model_hash` is A1111's LoRA hash of it (sha256 of the bytes after the header), so listing it costs no
hashing.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import struct
from pathlib import Path

import safetensors.torch
import torch

from modules.models.families import Family

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}
BASE_MODEL_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def encoder_prefixes(family: Family) -> dict[str, str]:
    """diffusers component → its kohya key prefix."""
    if family.xl:
        return {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    return {"unet": "lora_unet_", "text_encoder": "lora_te_"}


def trained_layers(pipeline, adapter: str, family: Family) -> list[tuple[str, str, torch.nn.Module]]:
    """(component, module name, peft layer) of every layer holding `adapter`, in the model's order."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = []
    for component in encoder_prefixes(family):
        model = getattr(pipeline, component, None)
        for name, module in model.named_modules() if model is not None else ():
            if isinstance(module, BaseTunerLayer) and adapter in getattr(module, "lora_A", {}):
                layers.append((component, name, module))
    return layers


def _kohya_name(component: str, name: str, family: Family, sgm: dict[str, str] | None) -> str:
    """A module's kohya name: `sgm` maps the UNet's diffusers names to SGM's (SDXL only)."""
    prefix = encoder_prefixes(family)[component]
    if component != "unet":   # transformers >= 5.6 dropped the `text_model.` level; kohya's names keep it
        return prefix + "text_model_" + name.removeprefix("text_model.").replace(".", "_")
    if sgm is not None:
        if not sgm.get(name):
            raise ValueError(f"the UNet layer {name} has no SGM name (kohya's SDXL layout)")
        name = sgm[name]
    return prefix + name.replace(".", "_")


def kohya_state_dict(pipeline, adapter: str, family: Family, dtype: torch.dtype = torch.float16
                     ) -> dict[str, torch.Tensor]:
    """The adapter's weights under kohya's keys, as `dtype`, on the CPU."""
    sgm = None
    if family.xl:
        from modules.networks.lora.layers import sgm_unet_names

        sgm = sgm_unet_names(pipeline.unet)
    state = {}
    for component, name, layer in trained_layers(pipeline, adapter, family):
        key = _kohya_name(component, name, family, sgm)
        state[f"{key}.lora_down.weight"] = layer.lora_A[adapter].weight.detach().to("cpu", dtype).contiguous()
        state[f"{key}.lora_up.weight"] = layer.lora_B[adapter].weight.detach().to("cpu", dtype).contiguous()
        # peft scales by lora_alpha / r, kohya by alpha / (the down matrix's rank): the same alpha
        state[f"{key}.alpha"] = torch.tensor(float(layer.lora_alpha[adapter]), dtype=dtype)
    return state


def dataset_metadata(folder: str, captions: list[str], bucket_sizes: dict[str, int] | None) -> dict[str, str]:
    """kohya's `ss_*` keys about the dataset: the image count, the folder with its tags' frequencies (A1111's LoRA
    card lists a LoRA's training tags from `ss_tag_frequency`), and the buckets ("WxH": images) when bucketing."""
    name = Path(folder).name or folder
    frequency: dict[str, int] = {}
    for caption in captions:
        for tag in (part.strip() for part in caption.split(",")):
            if tag:
                frequency[tag] = frequency.get(tag, 0) + 1
    return {"ss_num_train_images": str(len(captions)),
            "ss_dataset_dirs": json.dumps({name: {"n_repeats": 1, "img_count": len(captions)}}),
            "ss_tag_frequency": json.dumps({name: frequency}),
            "ss_enable_bucket": str(bucket_sizes is not None),
            "ss_bucket_info": json.dumps({"buckets": bucket_sizes}) if bucket_sizes is not None else "null"}


def training_metadata(*, name: str, family: Family, v_prediction: bool, rank: int, alpha: float, steps: int,
                      epoch: int, dataset: dict[str, str], resolution: tuple[int, int], batch_size: int,
                      learning_rate: float, unet_lr: float, text_encoder_lr: float | None, lr_scheduler: str,
                      lr_warmup_steps: int, optimizer: str, seed: int, min_snr_gamma: float, noise_offset: float,
                      caption_dropout: float, gradient_accumulation: int, mixed_precision: str,
                      gradient_checkpointing: bool, model_name: str, model_hash: str, model_sha256: str,
                      started_at: float, class_images: int = 0, prior_loss_weight: float = 0.0) -> dict[str, str]:
    """kohya's `ss_*` metadata (strings, as safetensors requires), for the fields a training here has;
    `dataset` is `dataset_metadata`'s."""
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": f"{alpha:g}",
        "ss_network_args": json.dumps({}),
        "ss_output_name": name,
        "ss_base_model_version": BASE_MODEL_VERSIONS.get(family.id, family.id),
        "ss_v2": str(family.id == "sd2"),
        "ss_v_parameterization": str(v_prediction),
        "ss_sd_model_name": model_name,
        "ss_sd_model_hash": model_hash,
        "ss_new_sd_model_hash": model_sha256,
        "ss_training_started_at": f"{started_at:.3f}",
        "ss_training_finished_at": f"{datetime.datetime.now().timestamp():.3f}",
        "ss_steps": str(steps),
        "ss_max_train_steps": str(steps),
        "ss_epoch": str(epoch),
        "ss_num_reg_images": str(class_images),
        "ss_prior_loss_weight": f"{prior_loss_weight:g}",
        "ss_resolution": f"({resolution[0]}, {resolution[1]})",
        "ss_batch_size_per_device": str(batch_size),
        "ss_total_batch_size": str(batch_size * gradient_accumulation),
        "ss_gradient_accumulation_steps": str(gradient_accumulation),
        "ss_learning_rate": f"{learning_rate:g}",
        "ss_unet_lr": f"{unet_lr:g}",
        "ss_text_encoder_lr": "None" if text_encoder_lr is None else f"{text_encoder_lr:g}",
        "ss_network_train_unet_only": str(text_encoder_lr is None),
        "ss_lr_scheduler": lr_scheduler,
        "ss_lr_warmup_steps": str(lr_warmup_steps),
        "ss_optimizer": optimizer,
        "ss_seed": str(seed),
        "ss_min_snr_gamma": f"{min_snr_gamma:g}" if min_snr_gamma else "None",
        "ss_noise_offset": f"{noise_offset:g}" if noise_offset else "None",
        "ss_caption_dropout_rate": f"{caption_dropout:g}",
        "ss_mixed_precision": mixed_precision,
        "ss_gradient_checkpointing": str(gradient_checkpointing),
        "ss_clip_skip": "None",
        **dataset,
    }
    if family.xl:
        metadata["modelspec.architecture"] = "stable-diffusion-xl-v1-base/lora"
    return metadata


def _body_hash(data: bytes) -> str:
    (header_length,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(memoryview(data)[8 + header_length:]).hexdigest()


def lora_file_bytes(state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The .safetensors file, its `sshs_model_hash` (A1111's hash of the bytes after the header) filled in; the
    tensor bytes do not depend on the metadata, so the hash of a first serialisation is the final file's."""
    body_hash = _body_hash(safetensors.torch.save(state_dict, metadata=metadata))
    return safetensors.torch.save(state_dict, metadata={**metadata, "sshs_model_hash": body_hash})


def save_lora(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write the file atomically (OSError on a full disk, the old file untouched)."""
    from modules.images import replace_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lora_file_bytes(state_dict, metadata))
