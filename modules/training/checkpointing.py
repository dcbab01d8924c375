"""Gradient (activation) checkpointing for a training's forward passes: activations recomputed in the backward
pass instead of kept, less memory for about a third more time per step. The models are diffusers' (UNet,
ControlNet: they checkpoint whenever gradients are on) or transformers' text encoders (they checkpoint only in
training mode, so they are put in it meanwhile; CLIP's dropout is 0, the same computation).
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def gradient_checkpointing(*models):
    """Checkpointing on for `models` inside the block; each model's setting and mode as they were after. Always
    non-reentrant: the reentrant kind passes no gradient into a segment whose input needs none (the frozen
    embeddings' output), which would leave the adapters inside it untrained."""
    modes = [model.training for model in models]
    for model in models:
        if hasattr(model, "enable_gradient_checkpointing"):   # diffusers (non-reentrant by default)
            model.enable_gradient_checkpointing()
        else:
            _transformers_checkpointing(model, True)
            model.train()
    try:
        yield
    finally:
        for model, mode in zip(models, modes):
            if hasattr(model, "disable_gradient_checkpointing"):
                model.disable_gradient_checkpointing()
            else:
                _transformers_checkpointing(model, False)
            model.train(mode)


def _transformers_checkpointing(model, enable: bool) -> None:
    # transformers 5 calls it activation checkpointing (the gradient_checkpointing_* names warn); 4.x has only those
    if hasattr(model, "activation_checkpointing_enable"):
        if enable:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
