"""A1111's `modules.launch_utils`, for extensions' install.py and scripts: `is_installed`, `run_pip` (the project's
launch.py ones: pip runs against the core's constraints, modules/addons/pip_constraints.py), `run`, `git_clone`,
`commit_hash`, `git_tag`, `args` (the parsed flags) and A1111's constants (`python`, `git`, `index_url`,
`dir_repos`). Preparing the environment and starting the web UI are launch.py's own (`prepare_environment`, `start`
are not here)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from modules.addons import running
from modules.addons.missing_names import missing_name

script_path = str(Path(__file__).resolve().parent.parent)
python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")   # read by A1111's run_pip; pip here reads PIP_INDEX_URL itself
dir_repos = "repositories"
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"


def _launch():
    """The project's launch.py (beside modules/): its is_installed and run_pip are the ones install.py files get."""
    if script_path not in sys.path:
        sys.path.insert(0, script_path)
    import launch

    return launch


def is_installed(package: str) -> bool:
    """A distribution name ("opencv-python") or an importable module name ("cv2")."""
    return _launch().is_installed(package)


def run_pip(command: str, desc: str | None = None, live: bool = default_command_live) -> None:
    """`run_pip("install foo", "foo")`: pip in this environment, never replacing the web UI's own packages;
    RuntimeError when pip fails or refuses (as A1111's)."""
    _launch().run_pip(command, desc, live)


def run(command: str, desc: str | None = None, errdesc: str | None = None, custom_env: dict | None = None,
        live: bool = default_command_live) -> str:
    """A1111's: run a shell command line (an extension's own), its output returned; RuntimeError with the output
    when it fails."""
    if desc is not None:
        print(desc)
    result = subprocess.run(command, shell=True, env=os.environ if custom_env is None else custom_env,  # noqa: S602
                            encoding="utf8", errors="ignore",
                            **({} if live else {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}))
    if result.returncode != 0:
        lines = [f"{errdesc or 'Error running command'}.", f"Command: {command}", f"Error code: {result.returncode}"]
        lines += [f"stdout: {result.stdout}"] if result.stdout else []
        lines += [f"stderr: {result.stderr}"] if result.stderr else []
        raise RuntimeError("\n".join(lines))
    return result.stdout or ""


def check_run_python(code: str) -> bool:
    """Whether `python -c code` succeeds."""
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def _git(folder: str, *arguments: str) -> str:
    result = subprocess.run([git, "-C", folder, *arguments], capture_output=True, encoding="utf8", errors="ignore")
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(arguments)} in {folder} failed: {result.stderr.strip()}")
    return result.stdout


def run_git(dir: str, name: str, command: str, desc: str | None = None, errdesc: str | None = None,
            custom_env: dict | None = None, live: bool = default_command_live, autofix: bool = True) -> str:
    """A1111's: `git -C dir <command>` (a shell command line)."""
    return run(f'"{git}" -C "{dir}" {command}', desc=desc, errdesc=errdesc, custom_env=custom_env, live=live)


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:
    """Clone `url` into `dir` (removed again if the clone fails); an existing clone is moved to `commithash`."""
    if os.path.exists(dir):
        if commithash is None or _git(dir, "rev-parse", "HEAD").strip() == commithash:
            return
        _git(dir, "fetch")
        _git(dir, "checkout", commithash)
        return
    print(f"Cloning {name} into {dir}...")
    result = subprocess.run([git, "clone", "--config", "core.filemode=false", url, dir])
    if result.returncode != 0:
        shutil.rmtree(dir, ignore_errors=True)
        raise RuntimeError(f"Couldn't clone {name} from {url}")
    if commithash is not None:
        _git(dir, "checkout", commithash)


def repo_dir(name: str) -> str:
    return os.path.join(script_path, dir_repos, name)


@lru_cache
def commit_hash() -> str:
    """The web UI's git commit, "<none>" outside a clone."""
    try:
        return _git(script_path, "rev-parse", "HEAD").strip()
    except (OSError, RuntimeError):
        return "<none>"


@lru_cache
def git_tag() -> str:
    """The web UI's version: its git tag, else the project's version number."""
    try:
        return _git(script_path, "describe", "--tags").strip()
    except (OSError, RuntimeError):
        from modules.version import VERSION

        return VERSION


def __getattr__(name: str):
    # `args`: the running server's flags (shared.cmd_opts), or before it has started those on the command line.
    if name == "args":
        from modules import cmd_args

        try:
            return running.services().args
        except RuntimeError:
            return cmd_args.parser.parse_known_args()[0]
    raise missing_name("modules.launch_utils", name,
                       "preparing the environment and starting are launch.py's own here" if name in (
                           "prepare_environment", "start", "run_extension_installer", "run_extensions_installers",
                           "list_extensions", "requirements_met") else "")
