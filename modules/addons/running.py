"""The running server's services, bound once at start for A1111's module facades (`modules.shared`,
`modules.sd_models`, `modules.sd_vae`, …), which extensions import as plain modules and so cannot be handed them.
Kept apart from `shared` so that those modules and `shared` need not import one another."""
from __future__ import annotations

_services = None


def bind(services) -> None:
    global _services
    _services = services


def services():
    """The running server's services; a RuntimeError before the web UI has started."""
    if _services is None:
        raise RuntimeError("modules.shared is used before the web UI has started (no services bound)")
    return _services
