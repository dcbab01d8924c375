"""What the benchmark measures: the models (cases), the speed/memory modes with what each changes on our side and
on raw diffusers', the GPUs' peak compute, and the prompt and txt2img request every image is made from."""
from __future__ import annotations

from dataclasses import dataclass


PROMPT = "a photo of an astronaut riding a horse"


@dataclass(frozen=True)
class Case:
    key: str                      # sd15, sdxl, tiny (the row's model; --models names)
    label: str                    # the table's model column
    variant: str | None           # bundled config of the full-size architecture; None: the tiny test model
    size: int
    tflop_per_step: float | None  # UNet FLOPs of one CFG step (batch 2), reference/performance.md


FULL_CASES = {
    "sd15": Case("sd15", "SD1.5 512²", "sd15", 512, 1.607),
    "sdxl": Case("sdxl", "SDXL 1024²", "sdxl_base", 1024, 13.52),
}


@dataclass(frozen=True)
class Mode:
    flags: tuple[str, ...] = ()      # our command-line flags
    compile_unet: str | None = None  # our compile_unet setting
    raw_compile_mode: str | None = None   # torch.compile mode of the raw baseline (None: default mode)
    cuda_only: bool = False
    token_merging: float = 0.0       # our token_merging_ratio; the raw baseline patches tomesd in as its README does


MODES = {
    "default": Mode(),
    "compiled": Mode(compile_unet="torch.compile"),
    "compiled-cudagraphs": Mode(compile_unet="torch.compile + CUDA graphs", raw_compile_mode="reduce-overhead",
                                cuda_only=True),
    "medvram": Mode(flags=("--medvram",), cuda_only=True),
    "lowvram": Mode(flags=("--lowvram",), cuda_only=True),
    "tome": Mode(token_merging=0.5),
    "channelslast": Mode(flags=("--opt-channelslast",)),
}

DEFAULT_MODES = ("default", "compiled", "medvram", "lowvram")


def peak_tflops(device_name: str) -> float | None:
    """Dense fp16 tensor-core peak of the card (reference/performance.md); None where unknown."""
    name = device_name.upper()
    if "H100" in name and "PCIE" in name:
        return 756.0
    if "H100" in name or "H200" in name:
        return 989.4
    if "A100" in name:
        return 312.0
    return None


def txt2img_payload(name: str, size: int, steps: int, prompt: str = PROMPT) -> dict:
    return {"prompt": prompt, "seed": 1, "steps": steps, "width": size, "height": size, "sampler_name": "Euler",
            "cfg_scale": 7.0, "override_settings": {"sd_model_checkpoint": name}}
