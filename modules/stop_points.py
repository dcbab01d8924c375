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
import torch.nn.functional as F

# The blocks a pre-hook is put on: each does a bounded amount of work between two checks.
_BLOCK_TYPES = frozenset({"ResnetBlock2D", "BasicTransformerBlock", "Attention", "Downsample2D", "Upsample2D"})
# Above this many attention scores (batch × heads × queries × keys) one attention is computed in query slices,
# with a check between them: 2^27 scores take about 0.1-0.5 s on two CPU cores. Below it the computation is
# exactly diffusers' own (a single scaled_dot_product_attention call), so images at usual sizes do not change.
SCORES_PER_SLICE = 2 ** 27


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
    (only where diffusers' standard processor is in place: others, e.g. hypernetworks', are left alone)."""
    def hook(module, args):
        if should_stop():
            raise Interrupted()

    handles, replaced = [], []
    try:
        for root in modules:
            if root is None:
                continue
            for module in root.modules():
                name = type(module).__name__
                if name not in _BLOCK_TYPES:
                    continue
                handles.append(module.register_forward_pre_hook(hook))
                if slice_attention and name == "Attention" and type(module.processor).__name__ == "AttnProcessor2_0":
                    replaced.append((module, module.processor))
                    module.processor = SlicedQueryAttention(should_stop)
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, processor in replaced:
            module.processor = processor


class SlicedQueryAttention:
    """diffusers' AttnProcessor2_0, step for step, except that the attention itself is computed over slices of
    the queries when it is large, checking `should_stop` between them. Each query's result depends only on that
    query (and all keys), so slicing changes no value's meaning.

    Written here because no library has an interruptible attention: diffusers' SlicedAttnProcessor slices over
    batch × heads, which is 1 for the VAE's attention, the largest of all."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs
                 ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                          else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = self._attention(query, key, value, attention_mask)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _attention(self, query, key, value, mask) -> torch.Tensor:
        batch, heads, queries, _ = query.shape
        per_query = batch * heads * key.shape[2]
        if per_query * queries <= SCORES_PER_SLICE:
            return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        size = max(1, SCORES_PER_SLICE // per_query)
        out = query.new_empty((batch, heads, queries, value.shape[-1]))
        for start in range(0, queries, size):
            check(self.should_stop)
            end = min(queries, start + size)
            part_mask = None if mask is None else mask[:, :, start:end] if mask.shape[2] > 1 else mask
            out[:, :, start:end] = F.scaled_dot_product_attention(query[:, :, start:end], key, value,
                                                                  attn_mask=part_mask, dropout_p=0.0,
                                                                  is_causal=False)
        return out
