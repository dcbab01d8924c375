"""System information for a bug report, as A1111's /internal/sysinfo gives it: platform, Python, torch and the
GPU, the flags, the extensions, the settings and the installed packages. Nothing secret: the values of
--gradio-auth, --api-auth, --gradio-auth-path and --tls-keyfile are hidden wherever they appear (the command
line, COMMANDLINE_ARGS, the flags), and so are settings whose names say they hold a key, token or password."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from modules.cmd_args import SECRET_FLAGS, public_flags
from modules.version import VERSION

HIDDEN = "<hidden>"
# Environment variables worth reporting (A1111's list, less the ones about its own repositories).
ENVIRONMENT = ("COMMANDLINE_ARGS", "GRADIO_ANALYTICS_ENABLED", "PYTHONPATH", "TORCH_COMMAND", "REQS_FILE",
               "CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "HF_HUB_OFFLINE", "GRADIO_TEMP_DIR")
SECRET_SETTING = re.compile(r"(key|token|password|passwd|secret|auth|credential)", re.IGNORECASE)
_SECRET_OPTIONS = tuple("--" + name.replace("_", "-") for name in SECRET_FLAGS)


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A command line with the values of the secret flags hidden (`--api-auth u:p` and `--api-auth=u:p`)."""
    shown, hide_next = [], False
    for item in argv:
        if hide_next:
            shown.append(HIDDEN)
            hide_next = False
            continue
        flag, equals, _ = item.partition("=")
        if flag.replace("_", "-") in _SECRET_OPTIONS:
            if equals:
                shown.append(f"{flag}={HIDDEN}")
            else:
                shown.append(item)
                hide_next = True
            continue
        shown.append(item)
    return shown


def environment() -> dict[str, str]:
    found = {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}
    if "COMMANDLINE_ARGS" in found:
        try:
            found["COMMANDLINE_ARGS"] = shlex.join(redact_argv(shlex.split(found["COMMANDLINE_ARGS"])))
        except ValueError:   # unbalanced quotes: nothing of it is shown
            found["COMMANDLINE_ARGS"] = HIDDEN
    return found


def settings(values: dict) -> dict:
    """The settings, those that may hold a secret (an extension's API key) hidden."""
    return {key: HIDDEN if SECRET_SETTING.search(key) and value not in ("", None) else value
            for key, value in values.items()}


def torch_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError as error:   # pragma: no cover - torch is a requirement
        return {"error": str(error)}
    info: dict[str, Any] = {"version": torch.__version__, "cuda": torch.version.cuda,
                            "cuda available": torch.cuda.is_available(),
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                            "mps available": bool(getattr(torch.backends, "mps", None)
                                                  and torch.backends.mps.is_available())}
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({"name": props.name, "memory": pretty_bytes(props.total_memory),
                         "capability": f"{props.major}.{props.minor}"})
    info["gpus"] = gpus
    return info


def pretty_bytes(number: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(number) < 1024 or unit == "TB":
            return f"{number:.0f}{unit}" if unit == "B" else f"{number:.1f}{unit}"
        number /= 1024
    return f"{number}"


def machine() -> tuple[dict, dict | str]:
    """(CPU, RAM) as psutil sees them."""
    cpu: dict[str, Any] = {"model": platform.processor() or platform.machine()}
    try:
        import psutil
        cpu.update({"count logical": psutil.cpu_count(logical=True), "count physical": psutil.cpu_count(logical=False)})
        memory = psutil.virtual_memory()
        ram: dict | str = {name: pretty_bytes(getattr(memory, name)) for name in ("total", "used", "free", "available")
                           if getattr(memory, name, 0)}
    except Exception as error:  # noqa: BLE001 - a report must not fail on one missing figure
        ram = str(error)
    return cpu, ram


def packages() -> list[str]:
    names = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata.get("Name")
        if name:
            names[name.lower()] = f"{name}=={distribution.version}"
    return [names[key] for key in sorted(names)]


def commit(project_root: Path) -> str | None:
    """The project's git commit, read from .git without running git."""
    git = project_root / ".git"
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref: "):
            ref = head[5:]
            path = git / ref
            if path.is_file():
                return path.read_text(encoding="utf-8").strip()
            packed = (git / "packed-refs").read_text(encoding="utf-8")
            return next((line.split()[0] for line in packed.splitlines() if line.endswith(" " + ref)), None)
        return head
    except OSError:
        return None


def extension_entries(found) -> tuple[list[dict], list[dict]]:
    """(enabled, disabled) user extensions, as A1111 lists them (name, path, commit, branch, remote)."""
    from modules.addons.extensions import without_credentials

    def entry(extension) -> dict:
        return {"name": extension.name, "path": str(extension.path), "commit": extension.commit_hash or None,
                "branch": extension.branch or None, "remote": without_credentials(extension.remote) or None}

    users = [extension for extension in found if not extension.is_builtin]
    return ([entry(e) for e in users if e.enabled], [entry(e) for e in users if not e.enabled])


def collect(args, paths, options: dict, extensions: list, project_root: Path) -> dict[str, Any]:
    """The report, A1111's keys first."""
    cpu, ram = machine()
    enabled, disabled = extension_entries(extensions)
    return {
        "Platform": platform.platform(),
        "Python": platform.python_version(),
        "Version": VERSION,
        "Commit": commit(project_root),
        "Script path": str(project_root),
        "Data path": str(paths.data),
        "Extensions dir": str(paths.extensions),
        "Time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "Commandline": redact_argv(sys.argv),
        "Flags": {key: value for key, value in public_flags(args).items() if jsonable(value)},
        "Torch": torch_info(),
        "CPU": cpu,
        "RAM": ram,
        "Extensions": enabled,
        "Inactive extensions": disabled,
        "Environment": environment(),
        "Config": settings({key: value for key, value in options.items() if jsonable(value)}),
        "Packages": packages(),
    }


def to_json(report: dict) -> str:
    return json.dumps(report, ensure_ascii=False, indent=4, default=str)


def jsonable(value) -> bool:
    """Whether json.dumps takes `value` as it is."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
