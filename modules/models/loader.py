"""Building diffusers pipelines from original single-file checkpoints, fully offline.

The bundled configs in `configs/<variant>/` (diffusers layout, weight-free) give each family's constants:
activation functions, scheduler betas, VAE scaling factor, attention upcasting. The checkpoint itself gives
every shape — channel widths, depths, layer counts — read from its tensors as ComfyUI does, so fine-tunes
with unusual shapes and the tiny test models load through the same code as the standard files.
diffusers' own converters (`single_file_utils`) translate the key names.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# Offline always: no code path below may reach the hub, even if something asks it to.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate import init_empty_weights  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from modules.models import detect  # noqa: E402
from modules.models.detect import ModelSpec  # noqa: E402
from modules.models.families import TextEncoder  # noqa: E402
from modules.models.tokenizer import clip_tokenizer  # noqa: E402

CONFIG_ROOT = Path(__file__).parent / "configs"
UNET = detect.UNET
VAE = "first_stage_model."


class ModelLoadError(Exception):
    """The checkpoint's weights do not fit the architecture read from it."""


@lru_cache(maxsize=64)
def bundled_config(variant: str, part: str) -> dict:
    name = "scheduler_config.json" if part == "scheduler" else "config.json"
    return json.loads((CONFIG_ROOT / variant / part / name).read_text(encoding="utf-8"))


def scheduler_config(spec: ModelSpec) -> dict:
    """The model's DDPM training schedule, the base every sampler's scheduler is built from."""
    config = {k: v for k, v in bundled_config(spec.config_variant, "scheduler").items() if not k.startswith("_")}
    config["prediction_type"] = spec.prediction_type
    if spec.zero_terminal_snr:
        config["rescale_betas_zero_snr"] = True
    return config


def alphas_cumprod(state_dict, spec: ModelSpec) -> torch.Tensor:
    """The training schedule's cumulative alphas, as A1111's samplers take them: the checkpoint's own
    `alphas_cumprod` when it stores them (often in fp16, which moves every sigma a little), else LDM's
    register_schedule from the config's betas (float64, then float32). Zero-terminal-SNR models get A1111's
    rescale (its last alpha_bar 4.8973451890853435e-08)."""
    stored = state_dict.get("alphas_cumprod")
    if stored is not None and stored.ndim == 1 and stored.numel() > 1:
        alphas = stored.float().clone()
    else:
        config = scheduler_config(spec)
        count = int(config.get("num_train_timesteps", 1000))
        start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
        if config.get("beta_schedule", "scaled_linear") == "linear":
            betas = torch.linspace(start, end, count, dtype=torch.float64)
        else:
            betas = torch.linspace(start ** 0.5, end ** 0.5, count, dtype=torch.float64) ** 2
        alphas = torch.from_numpy(np.cumprod(1.0 - betas.numpy(), axis=0)).float()   # LDM's own arithmetic
    if spec.zero_terminal_snr:
        root = alphas.sqrt()
        first, last = root[0].clone(), root[-1].clone()
        root = (root - last) * (first / (first - last))
        alphas = root ** 2
        alphas[-1] = 4.8973451890853435e-08
    return alphas


# ---------------------------------------------------------------- shapes → configs

def key_indices(state_dict, pattern: str) -> list[int]:
    """Sorted distinct integers N of keys matching `pattern` with one `(\\d+)` group."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state_dict if (m := regex.match(key))})


def unet_config(state_dict, spec: ModelSpec) -> dict:
    config = dict(bundled_config(spec.config_variant, "unet"))
    first = state_dict[UNET + "input_blocks.0.0.weight"]

    # Walk the input blocks: ResBlocks (with an optional SpatialTransformer) until a Downsample ends a level.
    levels: list[dict] = []
    level = {"channels": None, "resnets": 0, "depth": 0}
    for index in key_indices(state_dict, re.escape(UNET) + r"input_blocks\.(\d+)\.")[1:]:
        prefix = f"{UNET}input_blocks.{index}."
        if prefix + "0.op.weight" in state_dict:
            levels.append(level)
            level = {"channels": None, "resnets": 0, "depth": 0}
            continue
        level["channels"] = state_dict[prefix + "0.out_layers.3.weight"].shape[0]
        level["resnets"] += 1
        level["depth"] = len(key_indices(state_dict, re.escape(prefix) + r"1\.transformer_blocks\.(\d+)\."))
    levels.append(level)

    resnets = {lvl["resnets"] for lvl in levels}
    if len(resnets) != 1:
        raise ModelLoadError(f"UNet levels have different numbers of ResBlocks: {sorted(resnets)}")
    mid_depth = len(key_indices(state_dict, re.escape(UNET) + r"middle_block\.1\.transformer_blocks\.(\d+)\."))
    if levels[-1]["depth"] and levels[-1]["depth"] != mid_depth:
        raise ModelLoadError("the UNet's middle block depth differs from its last level's")
    channels = [lvl["channels"] for lvl in levels]
    has_attention = [lvl["depth"] > 0 for lvl in levels]
    proj_in = next(t for k, t in state_dict.items() if k.startswith(UNET) and k.endswith("proj_in.weight"))
    context = next(t for k, t in state_dict.items() if k.startswith(UNET) and k.endswith("attn2.to_k.weight"))

    config.update(
        in_channels=first.shape[1],
        out_channels=state_dict[UNET + "out.2.weight"].shape[0],
        block_out_channels=channels,
        layers_per_block=resnets.pop(),
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attention)],
        # Levels without attention take the middle block's depth: diffusers sizes the middle block from the last entry.
        transformer_layers_per_block=[lvl["depth"] or max(mid_depth, 1) for lvl in levels],
        cross_attention_dim=context.shape[1],
        use_linear_projection=proj_in.dim() == 2,
    )
    # Heads cannot be read from weights: SD1 uses 8 heads everywhere, SD2 and SDXL 64 channels per head.
    config["attention_head_dim"] = spec.family.heads or [max(1, c // 64) for c in channels]
    time_embed = state_dict[UNET + "time_embed.0.weight"].shape[0]
    if time_embed != channels[0] * 4:
        config["time_embedding_dim"] = time_embed
    if UNET + "label_emb.0.0.weight" in state_dict:
        projection_in = state_dict[UNET + "label_emb.0.0.weight"].shape[1]
        pooled = _pooled_width(state_dict, spec)
        time_ids = spec.family.time_ids   # the refiner: an aesthetic score instead of the target size
        if (projection_in - pooled) % time_ids:
            raise ModelLoadError("the SDXL UNet's label_emb width does not fit its text encoder")
        config.update(projection_class_embeddings_input_dim=projection_in,
                      addition_time_embed_dim=(projection_in - pooled) // time_ids)
    return config


def _pooled_width(state_dict, spec: ModelSpec) -> int:
    prefix = spec.family.pooled_encoder.prefix
    projection = state_dict.get(prefix + "text_projection")
    return projection.shape[1] if projection is not None else state_dict[prefix + "token_embedding.weight"].shape[1]


def vae_config(state_dict, spec: ModelSpec) -> dict:
    config = dict(bundled_config(spec.config_variant, "vae"))
    levels = key_indices(state_dict, re.escape(VAE) + r"encoder\.down\.(\d+)\.")
    if not levels:
        raise ModelLoadError("no VAE found (no first_stage_model.* weights)")
    per_level = len(key_indices(state_dict, re.escape(VAE) + r"encoder\.down\.0\.block\.(\d+)\."))
    config.update(
        in_channels=state_dict[VAE + "encoder.conv_in.weight"].shape[1],
        out_channels=state_dict[VAE + "decoder.conv_out.weight"].shape[0],
        latent_channels=state_dict[VAE + "encoder.conv_out.weight"].shape[0] // 2,
        block_out_channels=[state_dict[f"{VAE}encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in levels],
        layers_per_block=per_level,
        down_block_types=["DownEncoderBlock2D"] * len(levels),
        up_block_types=["UpDecoderBlock2D"] * len(levels),
        use_quant_conv=VAE + "quant_conv.weight" in state_dict,
        use_post_quant_conv=VAE + "post_quant_conv.weight" in state_dict,
    )
    return config


def _clip_config(base: dict, *, width: int, vocab: int, positions: int, layers: int, intermediate: int,
                 projection: int | None) -> CLIPTextConfig:
    values = {k: v for k, v in base.items() if k not in ("architectures",)}
    values.update(hidden_size=width, vocab_size=vocab, max_position_embeddings=positions, num_hidden_layers=layers,
                  intermediate_size=intermediate, num_attention_heads=max(1, width // 64))
    if projection:
        values["projection_dim"] = projection
    return CLIPTextConfig(**values)


# ---------------------------------------------------------------- weights → modules

def materialise(module: torch.nn.Module, weights: dict[str, torch.Tensor], what: str, dtype) -> torch.nn.Module:
    """Load weights into a module created on the meta device; every parameter must be covered."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in weights and expected[k].is_meta]
    if missing:
        raise ModelLoadError(f"{what}: {len(missing)} weights missing from the checkpoint, e.g. {missing[:3]}")
    usable = {}
    for key, tensor in weights.items():
        if key not in expected:
            continue
        if tuple(tensor.shape) != tuple(expected[key].shape):
            if tensor.numel() == expected[key].numel():   # 1x1 conv ↔ linear attention weights in old VAEs
                tensor = tensor.reshape(expected[key].shape)
            else:
                raise ModelLoadError(f"{what}: {key} has shape {tuple(tensor.shape)}, "
                                     f"expected {tuple(expected[key].shape)}")
        usable[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    module.load_state_dict(usable, strict=False, assign=True)
    return module.eval().requires_grad_(False)


def build_unet(state_dict, spec: ModelSpec, dtype) -> UNet2DConditionModel:
    config = unet_config(state_dict, spec)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    return materialise(unet, convert_ldm_unet_checkpoint(state_dict, unet.config), "UNet", dtype)


def build_vae(state_dict, spec: ModelSpec, dtype) -> AutoencoderKL:
    config = vae_config(state_dict, spec)
    with init_empty_weights():
        vae = AutoencoderKL.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    return materialise(vae, convert_ldm_vae_checkpoint(state_dict, vae.config), "VAE", dtype)


def _unwrap_text_model(module, weights: dict) -> dict:
    """transformers ≥ 5.6 flattened CLIPTextModel (no `text_model.` level); CLIPTextModelWithProjection kept it."""
    if hasattr(module, "text_model"):
        return weights
    return {k.removeprefix("text_model."): v for k, v in weights.items()}


def build_clip_l(state_dict, prefix: str, base: dict, dtype) -> CLIPTextModel:
    """An OpenAI CLIP text encoder stored in Hugging Face layout (`<prefix>text_model.*`)."""
    p = prefix + "text_model."
    embedding = state_dict[p + "embeddings.token_embedding.weight"]
    config = _clip_config(
        base, width=embedding.shape[1], vocab=embedding.shape[0],
        positions=state_dict[p + "embeddings.position_embedding.weight"].shape[0],
        layers=len(key_indices(state_dict, re.escape(p) + r"encoder\.layers\.(\d+)\.")),
        intermediate=state_dict[p + "encoder.layers.0.mlp.fc1.weight"].shape[0], projection=None)
    with init_empty_weights():
        model = CLIPTextModel(config)
    weights = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(p) and "position_ids" not in k}
    return materialise(model, _unwrap_text_model(model, weights), "text encoder", dtype)


def build_open_clip(state_dict, prefix: str, base: dict, dtype, *, with_projection: bool, drop_last_layer: bool):
    """An OpenCLIP text encoder (`<prefix>transformer.resblocks.*`), converted by diffusers' converter."""
    embedding = state_dict[prefix + "token_embedding.weight"]
    layers = len(key_indices(state_dict, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\."))
    projection = state_dict.get(prefix + "text_projection")
    config = _clip_config(
        base, width=embedding.shape[1], vocab=embedding.shape[0],
        positions=state_dict[prefix + "positional_embedding"].shape[0],
        # SD2 feeds the UNet from the penultimate layer, so its diffusers encoder has one layer fewer.
        layers=layers - 1 if drop_last_layer else layers,
        intermediate=state_dict[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        projection=projection.shape[1] if projection is not None else None)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with init_empty_weights():
        model = cls(config)
    # diffusers' converter hard-codes SD2's 24th block as the one to drop; drop the real last one instead.
    last = f"{prefix}transformer.resblocks.{layers - 1}."
    source = {k: v for k, v in state_dict.items()
              if k.startswith(prefix) and not (drop_last_layer and k.startswith(last))}
    weights = convert_open_clip_checkpoint(model, source, prefix=prefix)
    return materialise(model, _unwrap_text_model(model, weights), "text encoder", dtype)


@dataclass
class Components:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: torch.nn.Module | None
    text_encoder_2: torch.nn.Module | None
    extras: dict = field(default_factory=dict)


def build_text_encoder(state_dict, encoder: TextEncoder | None, variant: str, dtype):
    if encoder is None:
        return None
    base = bundled_config(variant, encoder.config_part)
    if encoder.kind == "clip_l":
        return build_clip_l(state_dict, encoder.prefix, base, dtype)
    return build_open_clip(state_dict, encoder.prefix, base, dtype, with_projection=encoder.with_projection,
                           drop_last_layer=encoder.drop_last_layer)


def build_components(state_dict, spec: ModelSpec, dtype: torch.dtype, vae_dtype: torch.dtype) -> Components:
    family, variant = spec.family, spec.config_variant
    return Components(unet=build_unet(state_dict, spec, dtype), vae=build_vae(state_dict, spec, vae_dtype),
                      text_encoder=build_text_encoder(state_dict, family.text_encoder, variant, dtype),
                      text_encoder_2=build_text_encoder(state_dict, family.text_encoder_2, variant, dtype))


def build_pipeline(components: Components, spec: ModelSpec, scheduler):
    """The family's diffusers pipeline; txt2img on an inpainting model uses the inpaint pipeline."""
    family = spec.family
    cls = family.pipeline_class(inpainting=spec.inpainting)
    tokenizers = [clip_tokenizer(encoder.pad_token) if encoder is not None else None
                  for encoder in (family.text_encoder, family.text_encoder_2)]
    if not family.xl:
        return cls(vae=components.vae, text_encoder=components.text_encoder, tokenizer=tokenizers[0],
                   unet=components.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                   requires_safety_checker=False)
    extra = {} if family.generates else {"requires_aesthetics_score": True}
    return cls(vae=components.vae, text_encoder=components.text_encoder, text_encoder_2=components.text_encoder_2,
               tokenizer=tokenizers[0], tokenizer_2=tokenizers[1], unet=components.unet, scheduler=scheduler,
               **extra)
