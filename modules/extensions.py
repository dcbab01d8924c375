"""A1111's `modules.extensions`: the installed extensions (`extensions`, `active()`), as the Extensions tab lists
them; discovery, installing and updating live in `addons/extensions.py`."""
from __future__ import annotations

from modules import paths, shared
from modules.addons.missing_names import missing_name


class Extension:
    """A1111's Extension record, read from this server's one (name, path, enabled, is_builtin, git facts)."""

    def __init__(self, found):
        self.name = found.name
        self.canonical_name = found.canonical_name
        self.path = str(found.path)
        self.enabled = found.enabled
        self.is_builtin = found.is_builtin
        self.remote = found.remote or None
        self.branch = found.branch or None
        self.commit_hash = found.commit_hash
        self.commit_date = found.commit_date
        self.version = found.version
        self.status = found.status
        self.have_info_from_repo = bool(found.remote)

    def __repr__(self) -> str:
        return f"<Extension {self.name} ({'enabled' if self.enabled else 'disabled'})>"


def list_extensions() -> list[Extension]:
    """Every extension found (enabled or not), as the server found them at start."""
    return [Extension(found) for found in shared.services().scripts.extensions]


def active() -> list[Extension]:
    """A1111's: the enabled extensions."""
    return [extension for extension in list_extensions() if extension.enabled]


def __getattr__(name: str):
    if name == "extensions":
        return list_extensions()
    if name in ("extensions_dir", "extensions_builtin_dir"):
        return getattr(paths, name)
    raise missing_name("modules.extensions", name)
