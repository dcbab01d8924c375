"""The text encoder's side: its widths (what `for_model` matches embeddings against), and the embeddings' vectors
put into its token embeddings through a forward hook that lives only for a `with vectors_inserted(...)` block.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from modules.networks.textual_inversion.files import SINGLE_KEY, Embedding


def encoder_widths(pipeline) -> dict[str, int]:
    """The widths `for_model` needs, read from a loaded diffusers pipeline.

    SD1/SD2: {"": width}; SDXL: {"clip_l": w, "clip_g": w}; SDXL refiner (no first encoder): {"clip_g": w}.
    """
    first = getattr(pipeline, "text_encoder", None)
    second = getattr(pipeline, "text_encoder_2", None)
    if second is None:
        return {SINGLE_KEY: token_embedding_module(first).embedding_dim} if first is not None else {}
    widths = {"clip_g": token_embedding_module(second).embedding_dim}
    if first is not None:
        widths["clip_l"] = token_embedding_module(first).embedding_dim
    return widths


def token_embedding_module(text_encoder) -> torch.nn.Embedding:
    """The token-embedding layer of a transformers CLIP text model (flattened CLIPTextModel, or one with
    `.text_model` such as CLIPTextModelWithProjection)."""
    inner = getattr(text_encoder, "text_model", text_encoder)
    embeddings = getattr(inner, "embeddings", None)
    module = getattr(embeddings, "token_embedding", None)
    if module is None and hasattr(text_encoder, "get_input_embeddings"):
        module = text_encoder.get_input_embeddings()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"{type(text_encoder).__name__} has no token-embedding layer")
    return module


@contextmanager
def vectors_inserted(text_encoder, encoder_key: str, fixes_per_row: list[list[tuple[int, Embedding]]]):
    """For forward calls inside the block, put each embedding's vectors into the token embeddings.

    `fixes_per_row[i]` lists (offset in the chunk, embedding) for batch row i; offsets do not count BOS, so the
    vectors land at offset + 1 onwards (cut at the end of the sequence, as A1111 does). `encoder_key` picks the
    vectors: "" for SD1/SD2, "clip_l" / "clip_g" for SDXL's encoders. The hook is removed on exit; the model
    itself is never changed.
    """
    if not any(fixes_per_row):
        yield
        return
    module = token_embedding_module(text_encoder)

    def hook(_module, _args, output: torch.Tensor) -> torch.Tensor:
        if output.shape[0] != len(fixes_per_row):
            raise ValueError(f"textual inversion: {len(fixes_per_row)} rows of fixes for a batch of "
                             f"{output.shape[0]}")
        output = output.clone()
        for row, fixes in enumerate(fixes_per_row):
            for offset, embedding in fixes:
                vec = embedding.vectors_for(encoder_key)
                if vec is None or vec.shape[-1] != output.shape[-1]:
                    raise ValueError(f"textual inversion: embedding '{embedding.name}' has no vectors of width "
                                     f"{output.shape[-1]} for encoder '{encoder_key or 'text_encoder'}'")
                start = offset + 1
                count = min(output.shape[1] - start, vec.shape[0])
                if count > 0:
                    output[row, start:start + count] = vec[:count].to(device=output.device, dtype=output.dtype)
        return output

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
