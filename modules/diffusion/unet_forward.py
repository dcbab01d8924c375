"""Replacing a UNet's forward for the duration of one pass, wrappers nesting (ControlNet inside AND prompts)."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def replaced_forward(unet, forward):
    """`unet(...)` calls `forward` inside the block; whatever was in place before comes back after it."""
    previous = unet.__dict__.get("forward")   # an outer wrapper's, or None: the class's own
    unet.forward = forward
    try:
        yield
    finally:
        if previous is None:
            del unet.forward
        else:
            unet.forward = previous
