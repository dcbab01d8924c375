"""diffusers' AttnProcessor2_0, step for step, with two places the project changes it.

- `contexts`: what the keys and the values are computed from (hypernetworks pass the context through their
  modules first, networks/hypernetwork/apply.py);
- `attend`: the attention itself, computed over slices of the queries when it is large and a `check` is set
  (stop_points.py: it raises to stop the job between slices; on two CPU cores one self-attention over 65,536
  tokens took 30 s). Each query's result depends only on that query and all keys, so slicing changes no value's
  meaning; below SCORES_PER_SLICE the computation is one scaled_dot_product_attention call, exactly diffusers'.

Written here because diffusers offers neither: its SlicedAttnProcessor slices over batch × heads, which is 1
for the VAE's attention, the largest of all. Not an nn.Module, so installing one adds nothing to a model's
parameters or state dict.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# Above this many attention scores (batch × heads × queries × keys) a stop-checked attention is computed in query
# slices: 2^27 scores take about 0.1-0.5 s on two CPU cores.
SCORES_PER_SLICE = 2 ** 27


class AttentionProcessor:
    check: Callable[[], None] | None = None   # set: long attentions are sliced and this runs between slices

    def contexts(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the keys are computed from, what the values are computed from)."""
        return context, context

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask) -> torch.Tensor:
        batch, heads, queries, _ = query.shape
        per_query = batch * heads * key.shape[2]
        if self.check is None or per_query * queries <= SCORES_PER_SLICE:
            return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        size = max(1, SCORES_PER_SLICE // per_query)
        out = query.new_empty((batch, heads, queries, value.shape[-1]))
        for start in range(0, queries, size):
            self.check()
            end = min(queries, start + size)
            part_mask = None if mask is None else mask[:, :, start:end] if mask.shape[2] > 1 else mask
            out[:, :, start:end] = F.scaled_dot_product_attention(query[:, :, start:end], key, value,
                                                                  attn_mask=part_mask, dropout_p=0.0, is_causal=False)
        return out

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
        if encoder_hidden_states is None:     # self-attention: A1111's `context = default(context, x)`
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        context_k, context_v = self.contexts(encoder_hidden_states)
        key = attn.to_k(context_k)
        value = attn.to_v(context_v)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = self.attend(query, key, value, attention_mask)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
