"""How the benchmark measures: seconds with the GPU's queued work included, it/s from the difference of two step
counts, medians of interleaved runs, host syncs per step, graphs compiled, and the pixel difference to a reference
image."""
from __future__ import annotations

import base64
import io
import statistics
import time
from pathlib import Path


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    """(seconds, result) of fn(), the GPU's queued work included."""
    synchronize()
    started = time.perf_counter()
    value = fn()
    synchronize()
    return time.perf_counter() - started, value


def seconds(fn) -> float:
    return timed(fn)[0]


def interleaved(first, second, repeats: int) -> tuple[float, float]:
    """Median times of two functions run alternately, so background load hits both alike."""
    times = [(seconds(first), seconds(second)) for _ in range(repeats)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def measure_steps(generate, steps: int, repeats: int, its_steps: int | None = None, warm_up: bool = True) -> dict:
    """The `steps`-step image's median end-to-end seconds and the peak VRAM allocated while it is made; it/s from
    the time of 2M steps minus the time of M steps (M = `its_steps`, by default `steps`), so prompt encoding, VAE
    decode, PNG and HTTP cancel out; the fastest of the repeats, least disturbed by anything else on the machine.
    `warm_up`: one untimed image first, since the first images after a load still pay one-time costs (kernel
    selection, caches)."""
    import torch

    cuda = torch.cuda.is_available()
    its_steps = its_steps or steps
    if warm_up:
        generate(steps)
    e2e, peaks, reserved = [], [], []
    last = None
    for _ in range(repeats):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        took, last = timed(lambda: generate(steps))
        e2e.append(took)
        if cuda:
            peaks.append(torch.cuda.max_memory_allocated())
            reserved.append(torch.cuda.max_memory_reserved())
    short = list(e2e) if its_steps == steps else [seconds(lambda: generate(its_steps)) for _ in range(repeats)]
    long = [seconds(lambda: generate(2 * its_steps)) for _ in range(repeats)]
    extra = min(long) - min(short)
    return {"its": its_steps / extra if extra > 0 else None, "e2e_s": statistics.median(e2e),
            "peak_vram_bytes": max(peaks) if peaks else None,
            "reserved_vram_bytes": max(reserved) if reserved else None,
            "its_steps": its_steps, "short_s": short, "long_s": long, "last": last}


def host_syncs_per_step(generate, steps: int) -> float:
    """How often the host waits for the GPU per sampler step. CUDA's sync debug mode warns at every synchronising
    call (a read-back such as .item() or .cpu(), a blocking copy, an explicit synchronize), from any thread; the
    count for a 2M-step image minus that for an M-step one, over M, leaves out what happens once per image (the
    noise moved there, the decoded image read back)."""
    import warnings

    import torch

    def count(n: int) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                generate(n)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchronizing CUDA operation" in str(warning.message) for warning in caught)

    return (count(2 * steps) - count(steps)) / steps


def compiled_graphs() -> int:
    """How many graphs torch.compile (dynamo) has compiled in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def image_array(image):
    import numpy as np
    from PIL import Image

    if isinstance(image, str):   # base64 PNG from the API
        image = Image.open(io.BytesIO(base64.b64decode(image)))
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def pixel_difference(image, reference_path: Path) -> tuple[int, float] | None:
    from PIL import Image

    if not reference_path.exists():
        return None
    ours, reference = image_array(image), image_array(Image.open(reference_path))
    if ours.shape != reference.shape:
        return None
    diff = abs(ours - reference)
    return int(diff.max()), float(diff.mean())
