"""The web UI's backend. As in A1111, where start-up has imported most of `modules/` before extensions load,
`modules.<name>` after a plain `import modules` gives that module (imported on first use)."""
from __future__ import annotations

import importlib
import importlib.util


def __getattr__(name: str):
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
