"""One (model, mode): our side and raw diffusers' each in a fresh process, the default path's image for the pixel
comparison, and the start-up figure, within what is left of --time-budget."""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

from .cases import MODES, Case, peak_tflops
from .checkpoints import checkpoint_path
from .measuring import cuda_available
from .servers import start_to_first_image
from .workers import run_worker


MIN_MODE_SECONDS = 30   # with --time-budget: a (model, mode) is not started with less than this left
EXTRAS_SECONDS = 120    # nor the extras table


def time_left(options) -> float | None:
    """Seconds left of --time-budget (None: no budget)."""
    deadline = getattr(options, "deadline", None)
    return None if deadline is None else deadline - time.monotonic()


def out_of_time(options, needed: float) -> bool:
    left = time_left(options)
    return left is not None and left < needed


def compilation_available() -> bool:
    return importlib.util.find_spec("modules.diffusion.compilation") is not None


def bench_mode(case: Case, mode_name: str, work: Path, options, run: dict, device_name: str) -> dict:
    mode = MODES[mode_name]
    cuda = cuda_available()
    record = {"table": "modes", "kind": "gpu" if cuda else "cpu", "run": run, "model": case.key,
              "model_label": case.label, "size": case.size, "steps": options.steps, "mode": mode_name,
              "status": "ok", "ours": {}, "raw": {}, "floor": None}
    if mode.cuda_only and not cuda:
        record["status"] = "n/a (CUDA only)"
        return record
    if out_of_time(options, MIN_MODE_SECONDS):
        record["status"] = "not measured (time budget spent)"
        return record
    if mode.compile_unet and not compilation_available():
        record["status"] = "n/a (modules/compilation.py is not there yet)"
        return record
    if case.tflop_per_step and cuda:
        record["floor"] = {"tflop_per_step": case.tflop_per_step, "peak_tflops": options.peak_tflops
                           or peak_tflops(device_name)}
    data = work / f"data-{case.key}"
    data.mkdir(parents=True, exist_ok=True)
    settings = data / f"config-{mode_name}.json"
    values = {"compile_unet": mode.compile_unet, "compile_vae": options.compile_vae} if mode.compile_unet else {}
    if mode.token_merging:
        values["token_merging_ratio"] = mode.token_merging
    settings.write_text(json.dumps(values))
    checkpoint = checkpoint_path(work, case.key)
    reference = data / "reference-default.png"
    spec = {"side": "ours", "mode": mode_name, "checkpoint": str(checkpoint), "checkpoint_name": checkpoint.name,
            "data_dir": str(data), "ckpt_dir": str(checkpoint.parent), "lora_dir": str(work / "loras"),
            "settings_file": str(settings), "flags": list(mode.flags), "size": case.size, "steps": options.steps,
            "repeats": options.repeats,
            "compile_vae": options.compile_vae, "raw_compile": options.raw_compile,
            "raw_compile_mode": mode.raw_compile_mode, "token_merging": mode.token_merging}
    if mode_name == "medvram":     # every image moves the whole model in and out: fewer repeats
        spec["repeats"] = min(options.repeats, 2)
    elif mode_name == "lowvram":   # every step moves every weight: one repeat, it/s from M = steps/4
        spec.update(repeats=1, its_steps=max(2, options.steps // 4), warm_up=False)
    tag = f"{case.key}-{mode_name}"
    if mode_name == "default":
        spec["save_image"] = str(reference)
    elif mode.compile_unet or mode.token_merging:
        if not reference.exists():   # the default path's image, for the pixel comparison
            default_settings = data / "config-default.json"
            default_settings.write_text("{}")
            print(f"  {tag}: the default path's reference image", flush=True)
            run_worker(dict(spec, mode="default", flags=[], settings_file=str(default_settings), reference_only=True,
                            save_image=str(reference)), work, f"{tag}-reference", time_left(options))
        spec["reference"] = str(reference)

    print(f"  {tag}: ours", flush=True)
    record["ours"] = run_worker(spec, work, f"{tag}-ours", time_left(options))
    print(f"  {tag}: raw diffusers", flush=True)
    record["raw"] = run_worker(dict(spec, side="raw"), work, f"{tag}-raw", time_left(options))
    if not options.start_times:
        record["raw"].pop("start_to_image_s", None)
    elif out_of_time(options, MIN_MODE_SECONDS):
        record["ours"]["error"] = "; ".join(filter(None, [record["ours"].get("error"),
                                                          "start to first image not measured (time budget)"]))
    else:
        print(f"  {tag}: ours, start to first image", flush=True)
        timeout = min(options.server_timeout, time_left(options) or options.server_timeout)
        try:
            record["ours"]["start_to_image_s"] = start_to_first_image(spec, work / f"{tag}-server.log", timeout)
        except RuntimeError as error:
            record["ours"]["error"] = "; ".join(filter(None, [record["ours"].get("error"), f"server: {error}"]))
    return record
