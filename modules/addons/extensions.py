"""Extensions: finding them (A1111's `extensions.list_extensions`), their metadata.ini, their git facts, and
managing them from the Extensions tab: install from a git URL, check for updates, update, enable/disable.

Built-in extensions live in `extensions-builtin/`, the user's in `extensions/` (A1111 §7.1). Git facts are read
with GitPython without touching the network; installing, checking and updating run `git` with a protocol
allow-list (`GIT_ALLOW_PROTOCOL`, which also binds submodules) and no credential prompts. Whether the caller may
change anything at all is `check_access` (A1111's `ui_extensions.check_access`).
"""
from __future__ import annotations

import configparser
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import git

from modules.addons import pip_constraints
from modules.untrusted import user_files
from modules.cmd_args import is_non_local
from modules.paths import PROJECT_ROOT

log = logging.getLogger(__name__)

# Installing from file:// URLs is for tests only (a local repository stands in for GitHub).
ALLOW_FILE_URLS = False
GIT_TIMEOUT = 600            # seconds for one clone or fetch
MAX_METADATA_FILE = 1 << 20  # metadata.ini is a few lines; a bigger file is not one
INSTALLER_OUTPUT_TAIL = 4000
DISABLE_ALL_CHOICES = ("none", "extra", "all")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
_BRANCH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$")
_install_lock = threading.Lock()   # the exists-check and the rename into place happen as one step


class ExtensionError(ValueError):
    """A refused or failed extension action; the message is meant for the user."""


@dataclass
class ExtensionMetadata:
    """An extension's metadata.ini (A1111's ExtensionMetadata); an unreadable file reads as an empty one."""
    canonical_name: str
    requires: list[str]
    config: configparser.ConfigParser = field(default_factory=configparser.ConfigParser, repr=False)

    @classmethod
    def read(cls, folder: Path) -> tuple["ExtensionMetadata", str]:
        """The metadata of the extension in `folder`, and a problem to report ("" when none)."""
        config = configparser.ConfigParser(interpolation=None, strict=False)
        problem = ""
        path = folder / "metadata.ini"
        if path.is_file():
            try:
                config.read_string(user_files.read_text(path, limit=MAX_METADATA_FILE), source=str(path))
            except (OSError, UnicodeDecodeError, configparser.Error) as error:
                config = configparser.ConfigParser(interpolation=None, strict=False)
                problem = f"metadata.ini ignored: {error}"
        name = config.get("Extension", "Name", fallback="").strip() or folder.name
        requires = _parse_list(config.get("Extension", "Requires", fallback="").lower())
        return cls(canonical_name=name.lower(), requires=requires, config=config), problem

    def script_order(self, relative_path: str, available=()) -> tuple[list[str], list[str], list[str]]:
        """(requires, before, after) of the script "scripts/<file>.py": its own section plus the extension-wide
        "[scripts]" section, as A1111 reads them. An entry "a|b" becomes the first of its choices that is in
        `available`, else its first choice."""
        section = relative_path if relative_path.startswith("scripts/") else f"scripts/{relative_path}"

        def entries(key: str) -> list[str]:
            text = f"{self.config.get(section, key, fallback='')},{self.config.get('scripts', key, fallback='')}"
            return [_pick_choice(entry, available) for entry in _parse_list(text)]

        return entries("Requires"), entries("Before"), entries("After")

    def callback_order(self, callback_name: str) -> tuple[list[str], list[str]]:
        """(before, after) of "[callbacks/<callback_name>]" (A1111's list_callback_order_instructions)."""
        section = f"callbacks/{callback_name}"
        return (_parse_list(self.config.get(section, "Before", fallback="")),
                _parse_list(self.config.get(section, "After", fallback="")))


@dataclass
class Extension:
    name: str                       # folder name
    path: Path
    is_builtin: bool
    enabled: bool                   # after the settings and the flags are applied
    metadata: ExtensionMetadata
    disabled_reason: str = ""
    remote: str = ""                # git facts, empty when the folder is not a git checkout
    branch: str = ""
    commit_hash: str = ""
    commit_date: int | None = None  # unix time of HEAD's commit
    version: str = ""               # short commit hash
    problems: list[str] = field(default_factory=list)   # what could not be read (broken metadata.ini or .git)
    status: str = ""                # set by check_for_updates: "new commits", "latest"

    @property
    def canonical_name(self) -> str:
        return self.metadata.canonical_name


# ---------------------------------------------------------------- discovery

def discover(paths, options, args) -> list[Extension]:
    """Built-in extensions (paths.extensions_builtin) then user ones (paths.extensions), each sorted by name;
    hidden folders skipped; enabled from the settings `disabled_extensions` / `disable_all_extensions` and the
    flags --disable-all-extensions / --disable-extra-extensions. A second enabled extension with the same
    canonical name is disabled. One broken folder never stops the listing."""
    disabled = options.get("disabled_extensions", [])
    disabled = set(disabled) if isinstance(disabled, list) else set()
    disable_all = options.get("disable_all_extensions", "none")
    found: list[Extension] = []
    for root, is_builtin in ((paths.extensions_builtin, True), (paths.extensions, False)):
        for folder in _folders(root):
            extension = read_extension(folder, is_builtin)
            for problem in extension.problems:
                log.warning("Extension %s: %s", folder, problem)
            found.append(extension)
    reports = pip_constraints.recorded(paths.extensions)   # a failed or refused install.py (logged when it ran)
    for extension in found:
        if reports.get(extension.name):
            extension.problems.append(reports[extension.name])
    enabled_by_name: dict[str, Extension] = {}
    for extension in found:
        extension.disabled_reason = _disabled_reason(extension, disabled, disable_all, args)
        duplicate = enabled_by_name.get(extension.canonical_name)
        if not extension.disabled_reason and duplicate is not None:
            extension.disabled_reason = f"duplicate of {duplicate.path}"
        extension.enabled = not extension.disabled_reason
        if extension.enabled:
            enabled_by_name[extension.canonical_name] = extension
    for extension in found:   # "a|b" in Requires: whichever of them is there (A1111)
        extension.metadata.requires = [_pick_choice(name, enabled_by_name) for name in extension.metadata.requires]
    return found


def read_extension(folder: Path, is_builtin: bool = False) -> Extension:
    """One extension folder, enabled, with its metadata and git facts; what cannot be read goes to `problems`."""
    metadata, problem = ExtensionMetadata.read(folder)
    extension = Extension(name=folder.name, path=folder, is_builtin=is_builtin, enabled=True, metadata=metadata,
                          problems=[problem] if problem else [])
    _read_git_facts(extension)
    return extension


def _folders(root: Path) -> list[Path]:
    try:
        entries = [path for path in root.iterdir() if not path.name.startswith(".") and path.is_dir()]
    except OSError as error:
        if root.exists():
            log.warning("Cannot list extensions in %s: %s", root, error)
        return []
    return sorted(entries, key=lambda path: (path.name.lower(), path.name))


def _disabled_reason(extension: Extension, disabled: set[str], disable_all: str, args) -> str:
    if args.disable_all_extensions:
        return "--disable-all-extensions"
    if disable_all == "all":
        return 'setting "Disable all extensions": all'
    if not extension.is_builtin and args.disable_extra_extensions:
        return "--disable-extra-extensions"
    if not extension.is_builtin and disable_all == "extra":
        return 'setting "Disable all extensions": extra'
    if extension.name in disabled:
        return "disabled in settings"
    return ""


def _parse_list(text: str) -> list[str]:
    """"a, b c" → ["a", "b", "c"]: A1111 accepts commas and spaces as separators."""
    return [item for item in re.split(r"[,\s]+", text.strip()) if item]


def _pick_choice(entry: str, available) -> str:
    choices = entry.split("|")
    return next((choice for choice in choices if choice in available), choices[0])


def _read_git_facts(extension: Extension) -> None:
    """Remote, branch, commit and date, each read on its own: a repository missing one (an unborn branch, a
    detached HEAD, no remote) still shows the others. Nothing here contacts a remote."""
    if not (extension.path / ".git").exists():
        return
    try:
        repo = git.Repo(extension.path)
    except Exception as error:   # GitPython raises many kinds for a damaged .git
        extension.problems.append(f"not a readable git repository: {error}")
        return
    with repo:
        remote = _origin(repo)
        try:
            extension.remote = without_credentials(remote.url) if remote is not None else ""
        except Exception:   # a remote section without a url
            pass
        try:
            if not repo.head.is_detached and repo.head.reference.path.startswith("refs/heads/"):
                extension.branch = repo.head.reference.path.removeprefix("refs/heads/")
            commit = repo.head.commit
            extension.commit_hash = commit.hexsha
            extension.version = commit.hexsha[:8]
            extension.commit_date = int(commit.committed_date)
        except Exception as error:   # unborn branch, missing object, a ref that points nowhere
            if not extension.commit_hash:
                extension.problems.append(f"git HEAD unreadable: {error}")


def _origin(repo: git.Repo) -> git.Remote | None:
    """Remote "origin", else the first one (read from the config file, no `git` process)."""
    remotes = list(repo.remotes)
    return next((remote for remote in remotes if remote.name == "origin"), remotes[0] if remotes else None)


def without_credentials(url: str) -> str:
    # https://user:token@host/repo is a common way to clone private repositories; the token must not leak.
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url


# ---------------------------------------------------------------- install.py

def run_installer(extension: Extension, project_root: Path = PROJECT_ROOT, timeout: float = 600) -> tuple[bool, str]:
    """Run the extension's install.py (if it has one) as A1111 does: the current interpreter, PYTHONPATH = the
    project root, in the extension's folder; every pip it starts runs against the core's constraints
    (`pip_constraints`: PIP_CONSTRAINT), so it cannot replace the web UI's own packages. Returns (ok, the tail of
    its output); never raises."""
    script = extension.path / "install.py"
    if not script.is_file():
        return True, ""
    try:
        with pip_constraints.constraints_env({**os.environ, "PYTHONPATH": str(project_root)}) as (env, _):
            return _run_install_script(extension, script, env, timeout)
    except OSError as error:   # the constraints file could not be written
        return False, f"could not start install.py: {error}"


def _run_install_script(extension: Extension, script: Path, env: dict[str, str],
                        timeout: float) -> tuple[bool, str]:
    try:
        # A session of its own: on a timeout the whole group (pip and what it started) is killed.
        process = subprocess.Popen([sys.executable, str(script)], cwd=extension.path, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    except OSError as error:
        return False, f"could not start install.py: {error}"
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if os.name == "nt":
                process.kill()
            else:
                os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return False, _tail(output) + f"\ninstall.py of {extension.name} did not finish within {timeout:g} s"
    if process.returncode != 0:
        return False, _tail(output) + f"\ninstall.py of {extension.name} failed (exit code {process.returncode})"
    return True, _tail(output)


def _tail(output: bytes | None) -> str:
    return (output or b"").decode("utf-8", "replace")[-INSTALLER_OUTPUT_TAIL:].strip()


# ---------------------------------------------------------------- management

def check_access(args) -> None:
    """Refuse changes to extensions on a server other machines can reach (A1111's check_access): installing
    one runs its code. --gradio-auth does not lift this; only --enable-insecure-extension-access does."""
    if is_non_local(args) and not args.enable_insecure_extension_access:
        raise ExtensionError("Extension access is disabled because the server is reachable from the network "
                             "(--listen or --server-name). Start it with --enable-insecure-extension-access "
                             "to allow installing, updating and enabling extensions.")


def install_from_url(paths, url: str, branch: str | None = None,
                     dirname: str | None = None) -> tuple[Extension, tuple[bool, str] | None]:
    """Clone `url` (https only) into extensions/<dirname> (default: the URL's last part without ".git"), with
    its submodules, then run its install.py. Returns the extension and install.py's (ok, output), None when it
    has none. The clone goes to a hidden temporary folder inside extensions/ and is renamed into place only
    when complete: on any failure nothing is left behind."""
    url = (url or "").strip()
    protocols = _url_protocols(url)
    name = (dirname or "").strip() or _name_from_url(url)
    _check_name(name, "Local directory name" if (dirname or "").strip() else "URL")
    branch = (branch or "").strip() or None
    if branch is not None and (not _BRANCH.match(branch) or ".." in branch):
        raise ExtensionError(f"Branch: {branch!r} is not a branch name")
    root = Path(paths.extensions)
    target = root / name
    if target.exists() or target.is_symlink():
        raise ExtensionError(f"Local directory name: extensions/{name} already exists")
    root.mkdir(parents=True, exist_ok=True)
    env = _git_env(protocols)
    temporary = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        options = {"branch": branch} if branch else {}
        try:
            repo = git.Repo.clone_from(url, temporary, env=env, allow_unsafe_protocols=False,
                                       allow_unsafe_options=False, **options)
            with repo:
                repo.git.update_environment(**env)
                repo.git.submodule("update", "--init", "--recursive", kill_after_timeout=GIT_TIMEOUT)
        except (git.GitCommandError, git.UnsafeProtocolError, git.UnsafeOptionError) as error:
            raise ExtensionError(f"Cloning {without_credentials(url)} failed: {_git_message(error, url)}") from None
        with _install_lock:
            if target.exists() or target.is_symlink():
                raise ExtensionError(f"Local directory name: extensions/{name} already exists")
            os.rename(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    extension = read_extension(target)
    installer = run_installer(extension) if (target / "install.py").is_file() else None
    return extension, installer


def check_for_updates(extension: Extension) -> bool:
    """Whether the remote branch has moved past HEAD (A1111 fetches with --dry-run; `git ls-remote` asks the
    same question without writing anything). Sets `extension.status`; ExtensionError when it cannot tell."""
    with _open_repo(extension) as repo:
        remote, branch = _remote_and_branch(extension, repo)
        try:
            output = repo.git.ls_remote("--heads", remote.name, f"refs/heads/{branch}",
                                        kill_after_timeout=GIT_TIMEOUT)
        except git.GitCommandError as error:
            raise ExtensionError(f"{extension.name}: asking {extension.remote} failed: "
                                 f"{_git_message(error, remote.url)}") from None
        tip = output.split()[0] if output.strip() else ""
        if not tip:
            raise ExtensionError(f"{extension.name}: branch {branch} is not on {extension.remote} any more")
        head = repo.head.commit.hexsha
    extension.status = "latest" if tip == head else "new commits"
    return tip != head


def update(extension: Extension) -> str:
    """Fetch and `git reset --hard <remote>/<branch>` (A1111's fetch_and_reset_hard): local edits in the
    extension's folder are lost. Returns the new commit hash."""
    with _open_repo(extension) as repo:
        remote, branch = _remote_and_branch(extension, repo)
        try:
            remote.fetch(kill_after_timeout=GIT_TIMEOUT, allow_unsafe_protocols=False, allow_unsafe_options=False)
            commit = remote.refs[branch].commit.hexsha
            repo.git.reset("--hard", commit)
            repo.git.submodule("update", "--init", "--recursive", kill_after_timeout=GIT_TIMEOUT)
        # AssertionError: GitPython's answer to a remote without a fetch refspec; IndexError: no such remote branch
        except (git.GitCommandError, git.UnsafeProtocolError, AssertionError, IndexError) as error:
            raise ExtensionError(f"{extension.name}: update failed: {_git_message(error, remote.url)}") from None
    extension.status = "latest"
    return commit


def set_enabled(options, names_enabled: dict[str, bool], disable_all: str | None = None) -> list[str]:
    """Store which extensions are disabled (`disabled_extensions`; names not in `names_enabled` keep their
    state) and, if given, the "Disable all extensions" setting; they take effect at the next start."""
    if disable_all is not None and disable_all not in DISABLE_ALL_CHOICES:
        raise ExtensionError(f"Disable all extensions: must be one of {list(DISABLE_ALL_CHOICES)}")
    current = options.get("disabled_extensions", [])
    disabled = [name for name in (current if isinstance(current, list) else [])
                if names_enabled.get(name) is not True]
    disabled += [name for name, enabled in names_enabled.items() if not enabled and name not in disabled]
    changes = {"disabled_extensions": disabled}
    if disable_all is not None:
        changes["disable_all_extensions"] = disable_all
    options.update(changes, from_api=False)
    return disabled


def _url_protocols(url: str) -> tuple[str, ...]:
    """The protocols git may use for this install (its submodules included); ExtensionError for a bad URL."""
    try:
        parts = urlsplit(url)
    except ValueError:   # a malformed host such as "[::1"
        raise ExtensionError("URL: not a valid URL") from None
    allowed = ("https", "file") if ALLOW_FILE_URLS else ("https",)
    if not url or parts.scheme not in allowed or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ExtensionError(f"URL: {without_credentials(url)!r} is not an https:// git URL")
    if parts.scheme == "https" and not parts.hostname:
        raise ExtensionError(f"URL: {without_credentials(url)!r} has no host")
    return allowed


def _name_from_url(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rpartition("/")[2].removesuffix(".git")


def _check_name(name: str, field_name: str) -> None:
    if not _NAME.match(name) or name in ("..", "."):
        raise ExtensionError(f"{field_name}: {name!r} is not a usable folder name (letters, digits, '.', '_' "
                             "and '-', not starting with '.' or '-')")


def _git_env(protocols: tuple[str, ...]) -> dict[str, str]:
    return {
        "GIT_TERMINAL_PROMPT": "0",                  # a private URL fails instead of waiting for a password
        # Overrides protocol.* config, also for submodules (.gitmodules may name ext::, file:// or ssh:// URLs)
        "GIT_ALLOW_PROTOCOL": ":".join(protocols),
        "GIT_HTTP_LOW_SPEED_LIMIT": "1000",          # a stalled transfer ends after a minute
        "GIT_HTTP_LOW_SPEED_TIME": "60",
    }


def _open_repo(extension: Extension) -> git.Repo:
    if extension.is_builtin:
        raise ExtensionError(f"{extension.name}: built-in extensions are updated with the web UI")
    try:
        repo = git.Repo(extension.path)
    except Exception:
        raise ExtensionError(f"{extension.name}: not a git checkout") from None
    # Existing checkouts may have been cloned over ssh by hand; ext:: and the like stay refused.
    protocols = ("https", "ssh", "file") if ALLOW_FILE_URLS else ("https", "ssh")
    repo.git.update_environment(**_git_env(protocols))
    return repo


def _remote_and_branch(extension: Extension, repo: git.Repo) -> tuple[git.Remote, str]:
    remote = _origin(repo)
    if remote is None:
        raise ExtensionError(f"{extension.name}: has no git remote")
    if remote.name.startswith("-"):   # it goes on git's command line
        raise ExtensionError(f"{extension.name}: remote name {remote.name!r} refused")
    if repo.head.is_detached or not repo.head.reference.path.startswith("refs/heads/"):
        raise ExtensionError(f"{extension.name}: not on a branch (detached HEAD); update it with git")
    try:
        git.Git.check_unsafe_protocols(remote.url)
    except git.UnsafeProtocolError:
        raise ExtensionError(f"{extension.name}: remote URL {without_credentials(remote.url)!r} refused") from None
    return remote, repo.head.reference.path.removeprefix("refs/heads/")


def _git_message(error: Exception, url: str) -> str:
    text = (getattr(error, "stderr", "") or str(error)).strip()
    text = text.removeprefix("stderr:").strip().strip("'").strip()
    return text.replace(url, without_credentials(url)) or type(error).__name__
