"""The folders in extensions/, with the git facts A1111's extension list shows (remote, branch, commit).

Git is read as plain files (.git/HEAD, refs, packed-refs, config) instead of running `git`: no subprocess
per request, and nothing in an extension's folder gets executed. Loading extensions is not done yet, so
none is reported as enabled.
"""
from __future__ import annotations

import configparser
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

MAX_GIT_FILE = 1 << 20     # HEAD, refs and config are tiny; a bigger file is not one git wrote
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")   # sha1 or sha256


@dataclass(frozen=True)
class ExtensionInfo:
    name: str
    remote: str = ""
    branch: str = ""
    commit_hash: str = ""
    version: str = ""
    commit_date: str = ""     # the commit object is usually packed; reading packs is left to a git library
    enabled: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def list_extensions(folder: Path) -> list[ExtensionInfo]:
    """Each sub-folder of `folder` (hidden ones excepted), by name."""
    if not folder.is_dir():
        return []
    return [read_extension(path) for path in sorted(folder.iterdir(), key=lambda p: p.name.lower())
            if path.is_dir() and not path.name.startswith(".")]


def read_extension(path: Path) -> ExtensionInfo:
    git_dir = _git_dir(path)
    if git_dir is None:
        return ExtensionInfo(name=path.name)
    head = _read(git_dir / "HEAD")
    branch, commit = "", ""
    if head.startswith("ref:"):
        ref = head[4:].strip()
        branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ""
        commit = _resolve_ref(git_dir, ref)
    elif _COMMIT.match(head):   # a detached HEAD holds the commit itself
        commit = head
    return ExtensionInfo(name=path.name, remote=_remote_url(git_dir), branch=branch, commit_hash=commit,
                         version=commit[:8])


def _git_dir(path: Path) -> Path | None:
    dot_git = path / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():   # a submodule or worktree: "gitdir: <path>"
        pointer = _read(dot_git)
        if pointer.startswith("gitdir:"):
            target = Path(pointer[7:].strip())
            target = target if target.is_absolute() else path / target
            return target if target.is_dir() else None
    return None


def _read(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read(MAX_GIT_FILE).strip()
    except OSError:
        return ""


def _resolve_ref(git_dir: Path, ref: str) -> str:
    if not ref.startswith("refs/") or ".." in ref.split("/"):
        return ""
    loose = _read(git_dir / ref)
    if _COMMIT.match(loose):
        return loose
    for line in _read(git_dir / "packed-refs").splitlines():
        commit, _, name = line.partition(" ")
        if name == ref and _COMMIT.match(commit):
            return commit
    return ""


def _remote_url(git_dir: Path) -> str:
    """The url of remote "origin" (else of the first remote), without any credentials written into it."""
    config = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        config.read_string(_read(git_dir / "config"))
    except configparser.Error:
        return ""
    remotes = [section for section in config.sections() if section.startswith('remote "')]
    remotes.sort(key=lambda section: section != 'remote "origin"')
    url = config.get(remotes[0], "url", fallback="") if remotes else ""
    return _without_credentials(url.strip().strip('"'))


def _without_credentials(url: str) -> str:
    # https://user:token@host/repo is a common way to clone private repositories; the token must not leak.
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url
