"""The whole run: its stamp (device, versions, commit), every planned (model, mode) in turn, then the extras; the
results appended as JSON lines as they come, and read back for --merge-results."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import benchmark_report as report  # tools/, on the path (pure Python: formatting and the docs merge)

from . import ROOT
from .cases import FULL_CASES, Case
from .checkpoints import prepare_checkpoint
from .extras import bench_extras
from .modes import EXTRAS_SECONDS, MIN_MODE_SECONDS, bench_mode, out_of_time


def project_commit(given: str | None) -> str:
    """`given`, else the checkout's commit (marked when files differ from it), else the project version."""
    from modules.version import VERSION

    if given:
        return given

    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        commit = dirty = ""
    if not commit:
        return f"v{VERSION}"
    return f"{commit} + local changes" if dirty else commit


def run_stamp(options) -> dict:
    import diffusers
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    settings = f"{options.steps} steps, {options.repeats} repeats"
    if cuda and any(mode.startswith("compiled") for mode in options.modes):
        settings += f", raw compile: {options.raw_compile}"
    return {"label": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "device": device,
            "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "commit": project_commit(options.commit), "settings": settings}


def measure(options) -> list[dict]:
    import torch

    cuda = torch.cuda.is_available()
    if options.full and not cuda:
        sys.exit("--full needs a CUDA GPU (full-size SD1.5 and SDXL)")
    torch.set_num_threads(os.cpu_count() or 1)
    if options.full:
        cases = FULL_CASES
        plan = options.plan or [(model, mode) for model in options.models for mode in options.modes]
    else:
        size = 128 if options.quick else 256
        cases = {"tiny": Case("tiny", f"tiny SD1 {size}²", None, size, None)}
        plan = [("tiny", mode) for mode in options.modes]
    work = Path(options.work_dir) if options.work_dir else Path(tempfile.mkdtemp(prefix="sd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    run = run_stamp(options)
    device_name = run["device"]
    print(f"Device: {device_name}   torch {torch.__version__}   work folder: {work}", flush=True)
    records = []
    try:
        prepared = set()
        for case, mode_name in ((cases[key], mode) for key, mode in plan):
            print(f"{case.key} / {mode_name}", flush=True)
            if case.key not in prepared and not out_of_time(options, MIN_MODE_SECONDS):
                prepare_checkpoint(work, case)
                prepared.add(case.key)
            record = bench_mode(case, mode_name, work, options, run, device_name)
            records.append(record)
            save_results(options.results, [record])
            print(report.render([record], runs=False), flush=True)
        if options.extras and out_of_time(options, EXTRAS_SECONDS):
            print("LoRAs, prompt encoding, switching, start-up: not measured (time budget)", flush=True)
        elif options.extras:
            print("LoRAs, prompt encoding, switching, start-up", flush=True)
            extras = bench_extras([cases[key] for key in options.models] if options.full else list(cases.values()),
                                  work, options, run)
            records += extras
            save_results(options.results, extras)
    finally:
        if not options.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return records


def save_results(path: str | None, records: list[dict]) -> None:
    """Append records as JSON lines (after each mode, so a run cut short keeps what it measured)."""
    if path:
        with open(path, "a", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")


def load_results(paths: list[str]) -> list[dict]:
    records = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records
