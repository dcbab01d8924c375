"""The checkpoints the benchmark writes (nothing is downloaded): full-size SD1.5/SDXL architectures with random fp16
weights or the tiny test model, in the original single-file layout, each with three kohya LoRAs."""
from __future__ import annotations

import gc
import json
import time
from pathlib import Path

from .cases import Case


def full_size_checkpoint(variant: str, path: Path):
    """A full-size SD1.5 / SDXL architecture with random fp16 weights, written in the original layout.

    Returns the modules too (as the test fixtures do), so LoRAs can be made for it."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from modules.models.loader import CONFIG_ROOT
    from tests.fixtures import tiny_checkpoints as ldm

    def config(part):
        data = json.loads((CONFIG_ROOT / variant / part / "config.json").read_text())
        return {k: v for k, v in data.items() if not k.startswith("_")}

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(config("unet")).half()
        vae = AutoencoderKL.from_config(config("vae")).half()
        clip_l = CLIPTextModel(CLIPTextConfig(**config("text_encoder"))).half()
        clip_g = (CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2"))).half()
                  if variant.startswith("sdxl") else None)
    state = {"model.diffusion_model." + k: v for k, v in ldm.unet_to_ldm(unet.state_dict(), unet).items()}
    state.update({"first_stage_model." + k: v for k, v in ldm.vae_to_ldm(vae.state_dict(), vae).items()})
    if clip_g is None:
        state.update(ldm.clip_to_ldm(clip_l, "cond_stage_model.transformer."))
    else:
        state.update(ldm.clip_to_ldm(clip_l, "conditioner.embedders.0.transformer."))
        state.update(ldm.open_clip_to_ldm(clip_g, "conditioner.embedders.1.model."))
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))
    family = "sdxl" if variant.startswith("sdxl") else "sd1"
    return ldm.TinyModel(family, {}, unet, vae, clip_l, clip_g)


def tiny_checkpoint(path: Path, seed: int):
    from tests.fixtures import tiny_checkpoints as ldm

    model = ldm.build_tiny_model("sd1", seed=seed)
    ldm.write_safetensors(model, path)
    return model


def write_loras(model, folder: Path, prefix: str, count: int = 3) -> list[str]:
    """Kohya-format LoRAs (rank 4, UNet and text encoders) for `model`, as users download them."""
    from tests.fixtures.tiny_loras import kohya_lora, write_lora

    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{prefix}-lora{i}" for i in range(count)]
    for seed, name in enumerate(names):
        state = {k: v.detach().float().cpu().contiguous() for k, v in kohya_lora(model, seed=seed).items()}
        write_lora(state, folder / f"{name}.safetensors")
    return names


def checkpoint_path(work: Path, key: str) -> Path:
    return work / "checkpoints" / key / f"{key}-random.safetensors"


def prepare_checkpoint(work: Path, case: Case, seed: int = 0) -> Path:
    """Write the case's checkpoint and its three LoRAs, unless an earlier run left them in the work folder."""
    import torch

    path = checkpoint_path(work, case.key)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")   # renamed when complete: a killed run leaves no half file
    started = time.perf_counter()
    model = (full_size_checkpoint(case.variant, partial) if case.variant else tiny_checkpoint(partial, seed))
    write_loras(model, work / "loras", case.key)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    partial.rename(path)
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.1f}s", flush=True)
    return path
