"""Training speed and memory on a lent GPU (`--training --full`): LoRA on the full-size SD1.5 architecture at 512² and
on SDXL at 1024², with gradient checkpointing and fp16 mixed precision (and, for SDXL, bitsandbytes' 8-bit AdamW
where it imports), on the random-weight checkpoints `checkpoints.full_size_checkpoint` writes. For each: ms/step and
the peak VRAM allocated (`torch.cuda.max_memory_allocated`, the loaded model included) of our trainer and of the
diffusers example's loop (`training_lora`), in this process, interleaved (ours, the example, ours again; the
faster time and the larger peak of ours); SDXL's peaks beside the issue's target (≤ 12 GB with gradient
checkpointing and an 8-bit optimiser). Random weights cost what trained ones do: the figures are of the step, not
of what it learns.
"""
from __future__ import annotations

import gc
from pathlib import Path

from .cases import FULL_CASES
from .checkpoints import prepare_checkpoint
from .training import TARGET, write_dataset
from .training_lora import POSTERIOR_NOTE, RANK, example_lora, ours_lora

SDXL_VRAM_TARGET_GIB = 12.0   # the "12 GB": what a 12 GB card holds
IMAGES = 4


def _eight_bit_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure to import (no CUDA build, missing library) means no 8-bit
        return False
    return True


def _measured(run) -> tuple[float, int]:
    """(seconds per step, peak bytes allocated) of one side."""
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    seconds = run()
    return seconds, torch.cuda.max_memory_allocated()


def _case_lines(key: str, work: Path, batch_size: int, steps: int, eight_bit: bool) -> list[str]:
    from modules import cmd_args, services as services_module

    case = FULL_CASES[key]
    checkpoint = prepare_checkpoint(work, case)
    images = work / f"training-images-{case.size}"
    if not images.exists():
        write_dataset(images, case.size, IMAGES)
    xl = key == "sdxl"
    optimizer = "AdamW8bit" if xl and eight_bit else "AdamW"
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(work / f"training-data-{key}"),
                                                           "--ckpt-dir", str(checkpoint.parent), "--nowebui"]))
    try:
        model = services.generator.load(None)
        ours_work = work / f"training-{key}"

        def ours():
            return ours_lora(model, ours_work, images, case.size, batch_size, steps, mixed_precision="fp16",
                             gradient_checkpointing=True, optimizer=optimizer)

        first, first_peak = _measured(ours)
        example, example_peak = _measured(lambda: example_lora(
            model, images, case.size, batch_size, steps, mixed_precision="fp16", gradient_checkpointing=True,
            eight_bit=optimizer == "AdamW8bit"))
        again, again_peak = _measured(ours)
    finally:
        services.generator.manager.unload_all()
        services.shutdown()
    ours_seconds, ours_peak = min(first, again), max(first_peak, again_peak)
    example_name = f"train_text_to_image_lora{'_sdxl' if xl else ''}.py"
    lines = [f"LoRA (rank {RANK}, UNet attention, {optimizer}), {case.label} random weights, fp16 mixed precision, "
             f"gradient checkpointing, batch {batch_size}, median of {steps} steps:",
             f"  ({POSTERIOR_NOTE})",
             f"  {'ours:':<36}{ours_seconds * 1000:8.1f} ms/step, peak VRAM {ours_peak / 2**30:6.2f} GiB",
             f"  {example_name + ':':<36}{example * 1000:8.1f} ms/step, peak VRAM {example_peak / 2**30:6.2f} GiB",
             f"  ratio ours/example: {ours_seconds / example:.2f} (target <= {TARGET:.2f})"]
    if xl:
        verdict = "met" if ours_peak <= SDXL_VRAM_TARGET_GIB * 2**30 else "NOT met"
        lines.append(f"  SDXL peak VRAM target: <= {SDXL_VRAM_TARGET_GIB:.0f} GiB (a 12 GB card) with gradient "
                     f"checkpointing and an 8-bit optimiser: ours {ours_peak / 2**30:.2f} GiB, {verdict}"
                     + ("" if eight_bit else " (bitsandbytes does not import here: AdamW was used, not 8-bit)"))
    return lines


def bench_training_full(work: Path, batch_size: int = 1, steps: int = 10) -> list[str]:
    """Report lines for SD1.5 LoRA at 512² and SDXL LoRA at 1024²; refuses without CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--training --full needs a CUDA GPU (full-size SD1.5 and SDXL LoRA with gradient "
                         "checkpointing, peak VRAM); there is none here. Run --training without --full for the "
                         "CPU figures on the tiny model.")
    eight_bit = _eight_bit_available()
    lines = [f"device: {torch.cuda.get_device_name()}"]
    for key in ("sd15", "sdxl"):
        lines += _case_lines(key, work, batch_size, steps, eight_bit)
    return lines
