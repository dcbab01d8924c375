"""Prompts → conditioning during training, with gradients: the same chunking, emphasis, clip skip and
textual-inversion vectors as generation (`prompts/conditioning.TextEncoder`, as A1111 trains through its hijacked
`cond_stage_model`), but outside inference mode so that a trained embedding's vectors (or a text encoder's LoRA)
receive gradients, and without the caches (a cached tensor would carry the graph of an earlier step).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from modules.prompts.chunks import PromptChunk
from modules.prompts.conditioning import Conditioning, TextEncoder


class TrainingTextEncoder(TextEncoder):
    """Make a new one for each optimiser step (its per-text cache then lives for one step only).

    A batch's texts go through each text encoder together, one call per chunk position (generation encodes each
    prompt on its own; a training batch's captions all differ, and one call per caption made the step slower than
    diffusers' examples): the same tokens, embedding vectors, clip skip and emphasis per row as `TextEncoder`."""

    def _run_rows(self, encoder, key, chunks, pad_id):
        # TextEncoder._run_rows is wrapped in torch.inference_mode(); its undecorated body keeps the graph
        return TextEncoder._run_rows.__wrapped__(self, encoder, key, chunks, pad_id)

    def _encode_chunk_once(self, chunk):
        return self._encode_chunk(chunk)

    def encode_batch(self, texts: list[str]) -> torch.Tensor:
        """[batch, 77·chunks, width]: every text padded to the longest one's chunk count, as A1111 pads."""
        return self.encode_rows(texts).embeds

    def encode_rows(self, texts: list[str]) -> Conditioning:
        chunked = [self.chunks(text) for text in texts]
        count = max(len(chunks) for chunks in chunked)
        for chunks in chunked:
            chunks += [PromptChunk() for _ in range(count - len(chunks))]
        parts, pooled = [], None
        for position in range(count):
            hidden, position_pooled = self._encode_rows([chunks[position] for chunks in chunked])
            parts.append(hidden)
            if position == 0:
                pooled = position_pooled   # A1111 takes the pooled output of the first chunk
        return Conditioning(torch.cat(parts, dim=1), pooled)


@contextmanager
def frozen(*modules):
    """No gradients for these modules' weights inside the block (diffusers loads weights that require them);
    each weight's setting is restored after."""
    parameters = [parameter for module in modules if module is not None for parameter in module.parameters()]
    before = [parameter.requires_grad for parameter in parameters]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, setting in zip(parameters, before):
            parameter.requires_grad_(setting)


def encode_conditioning_batch(encoder: TrainingTextEncoder, texts: list[str]) -> Conditioning:
    """The batch's `Conditioning`: embeds [batch, 77·chunks, width] and, for SDXL, the pooled projections
    [batch, width] (the UNet's `text_embeds`), every text padded to the longest one's chunk count."""
    return encoder.encode_rows(texts)


def sdxl_time_ids(sizes: list[tuple[int, int]]) -> torch.Tensor:
    """SDXL's micro-conditioning per image, [batch, 6]: original size (h, w), crop top-left (0, 0) and target
    size (h, w); a training image is seen whole at its own size, so original and target are that size."""
    return torch.tensor([[height, width, 0, 0, height, width] for width, height in sizes], dtype=torch.float32)
