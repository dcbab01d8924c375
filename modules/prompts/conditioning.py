"""Prompt text → text-encoder conditioning, the way A1111 builds it.

Prompts of any length are split into chunks of 75 tokens; each chunk is wrapped in BOS/EOS, padded to 77,
encoded on its own, and the results are concatenated along the sequence axis (A1111's
`sd_hijack_clip`). Prompt and negative prompt are padded to the same number of chunks with encodings
of an empty chunk. The A1111 prompt language (weights, scheduling) plugs in at `tokenize`: it will
produce weighted chunks, and `encode_chunks` will apply the weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from modules.models.tokenizer import BOS_ID, EOS_ID, clip_tokenizer

CHUNK_TOKENS = 75


@dataclass
class Conditioning:
    embeds: torch.Tensor            # [1, 77 * chunks, width]
    pooled: torch.Tensor | None     # [1, projection width], SDXL only

    @property
    def chunks(self) -> int:
        return self.embeds.shape[1] // (CHUNK_TOKENS + 2)


def tokenize(text: str) -> list[list[int]]:
    """Token ids of the prompt split into chunks of at most 75 (always at least one chunk)."""
    ids = clip_tokenizer()(text, add_special_tokens=False, truncation=False).input_ids if text else []
    chunks = [ids[i:i + CHUNK_TOKENS] for i in range(0, len(ids), CHUNK_TOKENS)]
    return chunks or [[]]


def token_count(text: str) -> tuple[int, int]:
    """(tokens used, current limit) for the UI counter: "80/150" means 80 tokens in two chunks."""
    used = sum(len(chunk) for chunk in tokenize(text))
    return used, max(1, -(-used // CHUNK_TOKENS)) * CHUNK_TOKENS


def _chunk_ids(chunk: list[int], pad_id: int, device) -> torch.Tensor:
    ids = [BOS_ID] + chunk + [EOS_ID]
    ids += [pad_id] * (CHUNK_TOKENS + 2 - len(ids))
    return torch.tensor([ids], dtype=torch.long, device=device)


def _final_norm(encoder):
    return getattr(encoder, "text_model", encoder).final_layer_norm


@torch.inference_mode()
def _encode_chunk(pipeline, family: str, chunk: list[int], clip_skip: int):
    if family in ("sd1", "sd2"):
        encoder = pipeline.text_encoder
        pad = EOS_ID if family == "sd1" else 0
        out = encoder(_chunk_ids(chunk, pad, encoder.device), output_hidden_states=clip_skip > 1)
        if clip_skip > 1:
            # A1111 clip skip: an earlier layer's output, still passed through the final layer norm.
            return _final_norm(encoder)(out.hidden_states[-clip_skip]), None
        return out.last_hidden_state, None
    # SDXL: penultimate hidden states of each encoder side by side, plus the second one's pooled projection.
    # A1111 ignores Clip skip for SDXL by default (setting sdxl_clip_l_skip off), and so do we.
    hidden = []
    if pipeline.text_encoder is not None:
        out = pipeline.text_encoder(_chunk_ids(chunk, EOS_ID, pipeline.text_encoder.device),
                                    output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
    encoder = pipeline.text_encoder_2
    out = encoder(_chunk_ids(chunk, 0, encoder.device), output_hidden_states=True)
    hidden.append(out.hidden_states[-2])
    return torch.cat(hidden, dim=-1), out.text_embeds


def encode(pipeline, family: str, text: str, clip_skip: int = 1, *, min_chunks: int = 1) -> Conditioning:
    chunks = tokenize(text)
    chunks += [[]] * (min_chunks - len(chunks))
    parts, pooled = [], None
    for index, chunk in enumerate(chunks):
        hidden, chunk_pooled = _encode_chunk(pipeline, family, chunk, clip_skip)
        parts.append(hidden)
        if index == 0:
            pooled = chunk_pooled    # A1111 takes the pooled output of the first chunk
    return Conditioning(torch.cat(parts, dim=1), pooled)


def encode_pair(pipeline, family: str, prompt: str, negative: str, clip_skip: int = 1):
    """Prompt and negative prompt conditioning with the same number of chunks (the UNet batch needs it)."""
    chunks = max(len(tokenize(prompt)), len(tokenize(negative)))
    return (encode(pipeline, family, prompt, clip_skip, min_chunks=chunks),
            encode(pipeline, family, negative, clip_skip, min_chunks=chunks))
