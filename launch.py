"""Prepare the environment, then start the web UI (or run the test suite).

    python3 launch.py [A1111 flags]        install what is missing into ./venv, then start the UI
    python3 launch.py --run-tests [ARGS]   install what is missing (test tools and Chromium too), run pytest

Like A1111's launcher it creates a virtual environment on first run and re-runs itself inside it.
Requirements are installed again only when requirements*.txt change (a stamp file records their hash).
Environment: VENV_DIR (the virtual environment, default ./venv), LAUNCH_NO_VENV=1 (run in this Python as it is,
no virtual environment), COMMANDLINE_ARGS (flags read before the command line's, as A1111's).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("VENV_DIR", ROOT / "venv"))
STAMP = VENV / ".requirements-installed"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def run(command: list[str], what: str) -> None:
    print(f"[launch] {what}", flush=True)
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"[launch] failed: {what} (exit code {result.returncode})")


def requirements_hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


# Installed with --no-deps beside a requirements file: reference code the tests compare against (see the file).
NO_DEPS_REQUIREMENTS = {"requirements-test.txt": "requirements-test-nodeps.txt"}


def install_requirements(requirement_file: str) -> None:
    no_deps = NO_DEPS_REQUIREMENTS.get(requirement_file)
    files = [ROOT / "requirements.txt", ROOT / requirement_file, *([ROOT / no_deps] if no_deps else [])]
    wanted = requirements_hash(sorted(set(files)))
    if STAMP.exists() and wanted in STAMP.read_text().split():
        return
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    run(pip + ["-r", str(ROOT / requirement_file)], f"installing {requirement_file}")
    if no_deps:
        run(pip + ["--no-deps", "-r", str(ROOT / no_deps)], f"installing {no_deps}")
    # torch and torchvision must match, or `import transformers` breaks: check it before going on.
    run([sys.executable, "-c", "import torchvision.ops, transformers, diffusers"], "checking the installation")
    previous = STAMP.read_text().split() if STAMP.exists() else []
    STAMP.write_text("\n".join(previous + [wanted]) + "\n")


# What the web UI cannot start without; `--skip-install` checks these instead of installing.
REQUIRED_MODULES = ("torch", "torchvision", "diffusers", "transformers", "safetensors", "gradio", "fastapi",
                    "uvicorn", "PIL")


def missing_modules(python: Path | str) -> list[str]:
    """The REQUIRED_MODULES that `python` cannot import (looked up, not imported: fast)."""
    code = ("import importlib.util, sys\n"
            f"print(' '.join(m for m in {REQUIRED_MODULES!r} if importlib.util.find_spec(m) is None))")
    try:
        found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return list(REQUIRED_MODULES)
    return found.stdout.split() if found.returncode == 0 else list(REQUIRED_MODULES)


def install_xformers_if_asked(argv: list[str]) -> None:
    if "--xformers" not in argv:
        return
    check = subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"])
    if check.returncode != 0:
        print("[launch] --xformers ignored: no CUDA device; using PyTorch SDP attention", flush=True)
        return
    if subprocess.run([sys.executable, "-c", "import xformers.ops"], capture_output=True).returncode != 0:
        run([sys.executable, "-m", "pip", "install", "xformers"], "installing xformers")


def ensure_chromium() -> None:
    """The browser tests drive Debian's Chromium (Playwright cannot download browsers here)."""
    if shutil.which("chromium"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, check=False)
    if not shutil.which("chromium"):
        print("[launch] Chromium is not installed; the browser tests will fail. Install the 'chromium' package.",
              flush=True)


# A1111's helpers that extensions' install.py files call (`import launch; launch.is_installed(...)`).
def is_installed(package: str) -> bool:
    """A distribution name ("opencv-python") or an importable module name ("cv2")."""
    import importlib.metadata
    import importlib.util

    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def run_pip(command: str, desc: str | None = None, live: bool = False) -> None:
    """`launch.run_pip("install foo", "foo")`: pip in this interpreter's environment, against the core's
    constraints (modules/addons/pip_constraints.py): an extension cannot replace the web UI's own packages. pip
    refuses such an install; this then raises RuntimeError as A1111's does (an install.py fails, an extension's
    script that called it fails to load, the web UI goes on)."""
    import shlex

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from modules.addons import pip_constraints

    words = shlex.split(command)
    print(f"[launch] installing {desc or command}", flush=True)
    with pip_constraints.constraints_env() as (env, constraints):
        extra = ["--prefer-binary", "--constraint", str(constraints)] if pip_constraints.is_install(words) else []
        result = subprocess.run([sys.executable, "-m", "pip", *words, *extra], cwd=ROOT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"Couldn't install {desc or command}: pip failed (exit code {result.returncode}); "
                           "its output says why")


def print_help() -> None:
    """The web UI's flags, read from modules/cmd_args.py (standard library only), before anything is installed."""
    sys.path.insert(0, str(ROOT))
    from modules.cmd_args import build_parser

    build_parser().print_help()
    print("\nlaunch.py also takes --run-tests [pytest arguments]. Enabled extensions may add flags (their preload.py).")
    print(f"""
environment variables:
  COMMANDLINE_ARGS   flags read before the command line's (A1111's)
  VENV_DIR           the virtual environment launch.py creates and runs in (now {VENV})
  LAUNCH_NO_VENV=1   run in this Python as it is: no virtual environment is created or entered (the
                     requirements are still installed into it, unless --skip-install)""")


def wants_help(argv: list[str]) -> bool:
    """-h/--help on the command line or in COMMANDLINE_ARGS (not after --run-tests: that is pytest's)."""
    import shlex

    try:
        words = [*shlex.split(os.environ.get("COMMANDLINE_ARGS", "")), *argv]
    except ValueError:
        words = list(argv)
    return "--run-tests" not in argv and ("-h" in words or "--help" in words)


def enter_venv(argv: list[str], skip_install: bool) -> None:
    """Re-runs launch.py in the virtual environment, creating it first. With --skip-install, a venv that lacks
    the requirements (created, never installed into) is not entered: this Python runs if it has them, else
    launch.py says what to do."""
    if skip_install and not (venv_python().exists() and not missing_modules(venv_python())):
        missing = missing_modules(sys.executable)
        if missing:
            sys.exit(f"[launch] --skip-install, but {VENV} is missing or incomplete and this Python lacks "
                     f"{', '.join(missing)}: run launch.py once without --skip-install (it installs into {VENV}), "
                     "or set LAUNCH_NO_VENV=1 with a Python that has the requirements")
        print(f"[launch] {VENV} is missing or incomplete; --skip-install: running in this Python "
              f"({sys.executable}), which has the requirements", flush=True)
        return
    if not venv_python().exists():
        run([sys.executable, "-m", "venv", str(VENV)], f"creating the virtual environment in {VENV}")
    os.execv(str(venv_python()), [str(venv_python()), str(Path(__file__).resolve()), *argv])


def main() -> None:
    argv = sys.argv[1:]
    testing = "--run-tests" in argv
    if wants_help(argv):
        print_help()
        return
    skip_install = "--skip-install" in argv or "--skip-prepare-environment" in argv
    if not in_venv() and not os.environ.get("LAUNCH_NO_VENV"):
        enter_venv(argv, skip_install)
    if skip_install and not testing:
        missing = missing_modules(sys.executable)
        if missing:
            sys.exit(f"[launch] --skip-install, but this Python ({sys.executable}) lacks {', '.join(missing)}: "
                     "run launch.py once without --skip-install")
    if not skip_install:
        install_requirements("requirements-test.txt" if testing else "requirements.txt")
        if testing:
            ensure_chromium()
        else:
            install_xformers_if_asked(argv)
    if testing:
        args = [a for a in argv if a not in ("--run-tests", "--skip-install")]
        sys.exit(subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT).returncode)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    import webui

    webui.main(argv)


if __name__ == "__main__":
    main()
