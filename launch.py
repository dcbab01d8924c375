"""Prepare the environment, then start the web UI (or run the test suite).

    python3 launch.py [A1111 flags]        install what is missing into ./venv, then start the UI
    python3 launch.py --run-tests [ARGS]   install what is missing (test tools and Chromium too), run pytest

Like A1111's launcher it creates a virtual environment on first run and re-runs itself inside it.
Requirements are installed again only when requirements*.txt change (a stamp file records their hash).
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


def install_requirements(requirement_file: str) -> None:
    files = [ROOT / "requirements.txt", ROOT / requirement_file]
    wanted = requirements_hash(sorted(set(files)))
    if STAMP.exists() and wanted in STAMP.read_text().split():
        return
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    run(pip + ["-r", str(ROOT / requirement_file)], f"installing {requirement_file}")
    # torch and torchvision must match, or `import transformers` breaks: check it before going on.
    run([sys.executable, "-c", "import torchvision.ops, transformers, diffusers"], "checking the installation")
    previous = STAMP.read_text().split() if STAMP.exists() else []
    STAMP.write_text("\n".join(previous + [wanted]) + "\n")


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
    """`launch.run_pip("install foo", "foo")`: pip in this interpreter's environment."""
    import shlex

    run([sys.executable, "-m", "pip", *shlex.split(command), "--prefer-binary"], f"installing {desc or command}")


def print_help() -> None:
    """The web UI's flags, read from modules/cmd_args.py (standard library only), before anything is installed."""
    sys.path.insert(0, str(ROOT))
    from modules.cmd_args import build_parser

    build_parser().print_help()
    print("\nlaunch.py also takes --run-tests [pytest arguments]. Enabled extensions may add flags (their preload.py).")


def main() -> None:
    argv = sys.argv[1:]
    testing = "--run-tests" in argv
    if not testing and ("-h" in argv or "--help" in argv):
        print_help()
        return
    skip_install = "--skip-install" in argv or "--skip-prepare-environment" in argv
    if not in_venv() and not os.environ.get("LAUNCH_NO_VENV"):
        if not venv_python().exists():
            run([sys.executable, "-m", "venv", str(VENV)], f"creating the virtual environment in {VENV}")
        os.execv(str(venv_python()), [str(venv_python()), str(Path(__file__).resolve()), *argv])
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
