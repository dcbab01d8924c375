"""Extensions' installs cannot replace the core's packages: every pip run started on an extension's behalf (its
install.py, `launch.run_pip`, a plain `pip install` subprocess) runs against a pip constraints file that pins
each of the core's direct requirements (requirements.txt) to the version installed now, through `--constraint`
and the PIP_CONSTRAINT environment variable pip honours. pip then refuses an install that would move one
(`transformers==4.57` over 5.x, a requirements file's `pydantic<=1.10`) and fails; `refused_lines` picks what
was refused out of its output, and the last install's report per extension is kept in a small JSON file beside
the user's extensions for the Extensions tab. Standard library only: launch.py imports it before anything else.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = PROJECT_ROOT / "requirements.txt"
ENV_VAR = "PIP_CONSTRAINT"
PREFIX = "webui-core-constraints-"
REPORTS_FILE = ".install-reports.json"   # in the user's extensions folder (ignored by git, not a folder: no extension)
MAX_REPORT = 4000
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def core_requirements(requirements: Path = REQUIREMENTS) -> list[str]:
    """The distribution names requirements.txt lists directly (comments, options and markers dropped)."""
    names = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = _NAME.match(line) if line and not line.startswith("-") else None
        if match and match.group(1) not in names:
            names.append(match.group(1))
    return names


def constraint_lines(requirements: Path = REQUIREMENTS) -> list[str]:
    """`name==version` for each of the core's direct requirements that is installed in this environment."""
    lines = []
    for name in core_requirements(requirements):
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return lines


def write_constraints(folder: str | Path | None = None, requirements: Path = REQUIREMENTS) -> Path:
    """A new constraints file (in the system's temporary folder unless `folder`); the caller deletes it. Its path
    has no spaces when the folder has none: pip splits PIP_CONSTRAINT on whitespace."""
    handle, name = tempfile.mkstemp(prefix=PREFIX, suffix=".txt", dir=folder)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write("# The web UI's own packages at their installed versions: extensions may not replace them.\n")
        file.write("".join(line + "\n" for line in constraint_lines(requirements)))
    return Path(name)


@contextlib.contextmanager
def constraints_env(base: dict[str, str] | None = None):
    """Yields (environment with PIP_CONSTRAINT set, the core's constraints file). An environment whose
    PIP_CONSTRAINT already names one of ours that exists (an install.py run by `run_installer` calling
    `launch.run_pip`) keeps it; otherwise a new one is written for the run, added to any constraints files the
    user named, and deleted after the run."""
    env = dict(os.environ if base is None else base)
    existing = env.get(ENV_VAR, "").split()
    ours = [part for part in existing if Path(part).name.startswith(PREFIX) and Path(part).is_file()]
    if ours:
        yield env, Path(ours[0])
        return
    path = write_constraints()
    try:
        yield {**env, ENV_VAR: " ".join([*existing, str(path)])}, path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def is_install(words: list[str]) -> bool:
    """Whether a pip command line (without "pip") is one that takes --constraint."""
    command = next((word for word in words if not word.startswith("-")), "")
    return command in ("install", "download", "wheel")


def refused_lines(output: str) -> list[str]:
    """pip's lines saying what it refused because of a constraint ("Cannot install ...", the conflict's causes,
    ResolutionImpossible); [] when the output shows no constraint conflict."""
    lines = output.splitlines()
    if not any("(constraint)" in line or "ResolutionImpossible" in line for line in lines):
        return []
    picked, in_causes = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("The conflict is caused by"):
            in_causes = True
            picked.append(stripped)
        elif in_causes and line[:1].isspace() and stripped:
            picked.append("    " + stripped)
        else:
            in_causes = False
            if stripped.startswith("ERROR:") or "(constraint)" in stripped:
                picked.append(stripped)
    return list(dict.fromkeys(picked))


def report_for(ok: bool, output: str) -> str:
    """What the Extensions tab says about an install: "" when it went well."""
    if ok:
        return ""
    refused = refused_lines(output)
    if refused:
        return ("install.py was refused a change to the web UI's own packages (they were kept):\n"
                + "\n".join(refused))[:MAX_REPORT]
    tail = "\n".join(output.strip().splitlines()[-12:])
    return f"install.py failed; the extension may not work:\n{tail}"[:MAX_REPORT]


def record(extensions_folder: str | Path, name: str, ok: bool, output: str) -> str:
    """Keep (or clear, when it went well) the report of `name`'s last install; returns the report."""
    report = report_for(ok, output)
    path = Path(extensions_folder) / REPORTS_FILE
    reports = recorded(extensions_folder)
    if report:
        reports[name] = report
    elif name not in reports:
        return report
    else:
        reports.pop(name)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(reports, indent=1), encoding="utf-8")
        os.replace(temporary, path)
    return report


def recorded(extensions_folder: str | Path) -> dict[str, str]:
    """The kept reports by extension name; an unreadable or odd file reads as none."""
    path = Path(extensions_folder) / REPORTS_FILE
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 64 * MAX_REPORT:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(key): value[:MAX_REPORT] for key, value in data.items() if isinstance(value, str)}
