"""Download the wheels the GPU machine lacks to run tools/benchmark.py (and `webui.py --nowebui`) there.

    venv/bin/python tools/device_wheels.py          # → tmp/whl/ (ignored by git), about 45 MB

The lent GPU machine (see docs/performance.md) has Python 3.12 with torch, transformers, accelerate,
safetensors, huggingface_hub, numpy, pillow, opencv, psutil, httpx, peft and friends, and no network. What our
API-only server and the benchmark import beyond that is listed below; each is pinned to the version in this
checkout's venv, so the GPU runs what the tests here ran. --no-deps: every needed dependency is named here.
On the GPU machine: `python3 -m pip install --no-index --no-deps --target /tmp/site tmp/whl/*.whl` and
`export PYTHONPATH=/tmp/site` (docs/performance.md has the whole command).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Found by importing everything a `--nowebui` server and the benchmark import (webui.create_app, a model load and a
# txt2img job), mapping the modules to their distributions, and leaving out what the GPU image already has.
NEEDED = (
    "diffusers",
    # the HTTP API
    "fastapi", "starlette", "pydantic", "pydantic_core", "annotated-types", "annotated-doc", "typing-inspection",
    "typing_extensions", "opentelemetry-api", "uvicorn", "python-multipart",
    # prompt parsing; the CLIP vocabulary (read from the package's folder, never imported); extensions (git)
    "lark", "open_clip_torch", "GitPython", "gitdb", "smmap",
    # token merging (the benchmark's tome mode)
    "tomesd",
)
# `--nowebui` still builds the scripts' controls off-page to learn their default arguments
# (modules/ui/scripts.record_defaults), which needs gradio.
GRADIO = ("gradio", "gradio_client", "groovy", "hf-gradio", "brotli", "orjson", "pydub", "pytz", "safehttpx",
          "semantic-version", "tomlkit")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", default=str(ROOT / "tmp" / "whl"), help="folder for the wheels (%(default)s)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (%(default)s)")
    parser.add_argument("--without-gradio", action="store_true",
                        help="leave gradio out (once `--nowebui` no longer imports it)")
    options = parser.parse_args()
    names = NEEDED + (() if options.without_gradio else GRADIO)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in names]
    dest = Path(options.dest)
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               options.python_version, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + pins, check=True)
    # One version of each: a stale wheel from an earlier download would stop the install there.
    wanted = {pin.lower().replace("-", "_") for pin in pins}
    kept = []
    for wheel in sorted(dest.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        if f"{name.lower()}=={version}" in wanted:
            kept.append(wheel)
        else:
            wheel.unlink()
    size = sum(wheel.stat().st_size for wheel in kept)
    print(f"{len(kept)} wheels, {size / 2 ** 20:.1f} MiB in {dest} (carry it as "
          f"\"{dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}\")")


if __name__ == "__main__":
    main()
