"""Stop points inside model calls, so that an interrupted job stops within seconds, not after the step.

Between sampler steps the pipeline's step callback stops a job; but one step of a large image can take minutes
on a CPU (a single self-attention over 65,536 tokens, at the 4-megapixel limit, took 30 s on the tiny test
UNet). So for the length of a pass (and of a VAE decode) every block of the model gets a forward pre-hook that
raises `Interrupted` once the job is to stop, and on the CPU self-attention over very many tokens is computed
in slices of queries with the same check between slices. A1111 checks only once per denoiser call.

The hooks cost a Python call per block (about 40 per UNet call); a compiled UNet gets none (dynamo would trace
them), its steps are short anyway.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch

from modules.diffusion.attention_processor import AttentionProcessor

# The blocks a pre-hook is put on: each does a bounded amount of work between two checks.
_BLOCK_TYPES = frozenset({"ResnetBlock2D", "BasicTransformerBlock", "Attention", "Downsample2D", "Upsample2D"})


class Interrupted(Exception):
    """The job was interrupted (or its batch skipped) inside a model call."""


def check(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        raise Interrupted()


@contextlib.contextmanager
def inside(modules: Iterable[torch.nn.Module | None], should_stop: Callable[[], bool], *,
           slice_attention: bool = False) -> Iterator[None]:
    """For the length of the block, `modules` (a UNet, a ControlNet, a VAE) raise `Interrupted` at the start of
    each of their blocks once `should_stop()`; with `slice_attention`, also between slices of a long attention
    (attention_processor.AttentionProcessor in place of diffusers' standard processor, or beside the project's own
    subclasses such as hypernetworks'; any other processor is left alone)."""
    def hook(module, args):
        check(should_stop)

    handles, replaced, told = [], [], []
    try:
        for root in modules:
            if root is None:
                continue
            for module in root.modules():
                name = type(module).__name__
                if name not in _BLOCK_TYPES:
                    continue
                handles.append(module.register_forward_pre_hook(hook))
                if not slice_attention or name != "Attention":
                    continue
                if isinstance(module.processor, AttentionProcessor):
                    told.append(module.processor)
                    module.processor.check = lambda: check(should_stop)
                elif type(module.processor).__name__ == "AttnProcessor2_0":
                    replaced.append((module, module.processor))
                    module.processor = AttentionProcessor()
                    module.processor.check = lambda: check(should_stop)
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, processor in replaced:
            module.processor = processor
        for processor in told:
            processor.check = None
