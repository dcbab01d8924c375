"""The running server's services, bound once at start for A1111's module facades (`modules.shared`,
`modules.sd_models`, `modules.sd_vae`, …), which extensions import as plain modules and so cannot be handed them.
Kept apart from `shared` so that those modules and `shared` need not import one another."""
from __future__ import annotations

from collections.abc import Callable, Mapping

_services = None


def bind(services) -> None:
    global _services
    _services = services


def services():
    """The running server's services; a RuntimeError before the web UI has started."""
    if _services is None:
        raise RuntimeError("modules.shared is used before the web UI has started (no services bound)")
    return _services


class LiveView(Mapping):
    """A read-only dict read afresh at each use from the running server (A1111's `checkpoints_list`, `vae_dict`):
    a reference an extension keeps from import time still sees a refresh."""

    def __init__(self, read: Callable[[], dict]):
        self._read = read

    def __getitem__(self, key):
        return self._read()[key]

    def __iter__(self):
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return repr(self._read())
