"""One side of one mode in a fresh process (tools/benchmark.py --worker SPEC), so neither side inherits the other's
global torch settings, caches or memory: the spec and the result pass as JSON files, the output goes to a log."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import BENCHMARK_SCRIPT, ROOT
from .ours import worker_ours
from .raw_diffusers import worker_raw


def run_worker(spec: dict, work: Path, tag: str, timeout: float | None = None) -> dict:
    """Run one side of one mode in a fresh process; its result, or {"error": ...} (the log keeps the details).
    `timeout`: what is left of the time budget; a worker still running then is stopped."""
    spec_path, out_path, log_path = (work / f"{tag}.{suffix}" for suffix in ("spec.json", "result.json", "log"))
    spec = dict(spec, out=str(out_path))
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    started = time.time()
    with open(log_path, "wb") as log:
        try:
            process = subprocess.run([sys.executable, str(BENCHMARK_SCRIPT), "--worker", str(spec_path)],
                                     cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"stopped at the time budget after {time.time() - started:.0f} s: "
                             f"{last_line(log_path)} (log: {log_path})"}
    if process.returncode != 0 or not out_path.exists():
        return {"error": f"exit {process.returncode}: {last_line(log_path)} (log: {log_path})"}
    result = json.loads(out_path.read_text())
    if "first_image_wall" in result:
        result["start_to_image_s"] = result.pop("first_image_wall") - started
    return result


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def worker_main(spec_path: str) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    spec = json.loads(Path(spec_path).read_text())
    result = worker_ours(spec) if spec["side"] == "ours" else worker_raw(spec)
    Path(spec["out"]).write_text(json.dumps(result))
