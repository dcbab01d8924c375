"""A1111's `modules.safe` for extensions: `load(filename)` reads a pickled weights file without running its code,
through the project's loader (`models/files.py`: `torch.load(weights_only=True)` with a short allowlist, or the
safetensors library). As in A1111, a file it refuses is reported and gives None.

`unsafe_torch_load` is A1111's way around its checks; there is no way around them here, by design, so it is the
same safe loader, raising instead of returning None. A1111's `extra_handler` (globals an extension allows) cannot
widen what is accepted either: it is accepted and not used.
"""
from __future__ import annotations

import logging

from modules.addons.missing_names import missing_name

log = logging.getLogger(__name__)


def _moved(data, map_location):
    """Tensors in the loaded object moved to `map_location` (the loader reads onto the CPU)."""
    import torch

    if map_location is None or map_location == "cpu" or callable(map_location):
        return data
    if isinstance(data, torch.Tensor):
        return data.to(map_location)
    if isinstance(data, dict):
        return {key: _moved(value, map_location) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_moved(value, map_location) for value in data)
    return data


def unsafe_torch_load(filename, *args, map_location=None, **kwargs):
    from modules.models import files

    return _moved(files.load_object(filename), map_location)


def load(filename, *args, **kwargs):
    return load_with_extra(filename, None, *args, **kwargs)


def load_with_extra(filename, extra_handler=None, *args, **kwargs):
    from modules.models import files

    try:
        return unsafe_torch_load(filename, *args, **kwargs)
    except files.ModelFileError as error:
        log.error("Error verifying pickled file from %s: %s", filename, error)
        return None


def __getattr__(name: str):
    # RestrictedUnpickler, Extra, check_pt, global_extra_handler, …
    raise missing_name("modules.safe", name, "pickles are read only by torch.load(weights_only=True) here")
