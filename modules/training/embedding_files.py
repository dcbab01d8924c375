"""Creating and saving textual-inversion embeddings in A1111's `.pt` layout (Train tab → Create embedding,
`POST /sdapi/v1/create/embedding`), which A1111, ComfyUI and this web UI's loader
(`networks/textual_inversion/files.py`) all read.

A1111's file: a dict with `string_to_token` {"*": 265}, `string_to_param` {"*": vectors [n, width]}, `name`,
`step` (optimiser steps trained so far: a resumed training goes on from it), `sd_checkpoint` (short hash) and
`sd_checkpoint_name`. It is a pickle of plain tensors, strings and numbers: torch's weights-only loader reads it.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from modules.images import replace_atomically
from modules.networks.textual_inversion import SINGLE_KEY, Embedding, token_embedding_module

MAX_VECTORS_PER_TOKEN = 75   # A1111's slider: one chunk
A1111_TOKEN = 265            # what A1111 stores as the "*" token id (its placeholder; never read back)


class EmbeddingFileError(ValueError):
    """A name, folder or existing file that does not allow the embedding to be created or saved."""


def file_name(name: str) -> str:
    """A1111's rule: only letters, digits, '.', '_', '-' and spaces are kept from the name; and no leading dot (a
    hidden file, which the embeddings folder's listing passes by: `../x` would make an embedding nobody sees)."""
    kept = "".join(ch for ch in name if ch.isalnum() or ch in "._- ").strip().lstrip(".").strip()
    if not kept:
        raise EmbeddingFileError(f"embedding name {name!r} has no usable characters (letters, digits, . _ - space)")
    return kept


def initial_vectors(pipeline, init_text: str, count: int) -> torch.Tensor:
    """A1111's create_embedding: the token embeddings of `init_text` (at most `count` tokens), spread over
    `count` vectors (vector i takes token i·tokens/count); all zeros when init_text is empty."""
    encoder, tokenizer = pipeline.text_encoder, pipeline.tokenizer
    layer = token_embedding_module(encoder)
    vectors = torch.zeros((count, layer.embedding_dim), dtype=torch.float32)
    if not init_text:
        return vectors
    ids = tokenizer(init_text, max_length=count, truncation=True, add_special_tokens=False).input_ids
    if not ids:   # text that tokenizes to nothing: A1111 falls back to "*"
        ids = tokenizer("*", add_special_tokens=False).input_ids
    with torch.no_grad():
        embedded = layer.weight[torch.tensor(ids, device=layer.weight.device)].float().cpu()
    for index in range(count):
        vectors[index] = embedded[index * embedded.shape[0] // count]
    return vectors


def create_embedding(folder: Path, name: str, vectors: torch.Tensor, *, overwrite: bool = False,
                     checkpoint_hash: str | None = None, checkpoint_name: str | None = None) -> Path:
    """Write a new embedding (step 0) as `<folder>/<name>.pt`; an existing file is kept unless `overwrite`."""
    path = Path(folder) / f"{file_name(name)}.pt"
    if path.exists() and not overwrite:
        raise EmbeddingFileError(f"file {path} already exists (tick 'Overwrite Old Embedding' to replace it)")
    embedding = Embedding(name=path.stem, vectors={SINGLE_KEY: vectors.detach().float().cpu()}, path=path, step=0,
                          sd_checkpoint=checkpoint_hash, sd_checkpoint_name=checkpoint_name)
    save_embedding(embedding, path)
    return path


def a1111_embedding_dict(embedding: Embedding) -> dict:
    """What A1111's `.pt` file holds (and, as JSON, its PNG chunk), the vectors float32 on the CPU."""
    vectors = embedding.vectors_for(SINGLE_KEY)
    if vectors is None:
        raise EmbeddingFileError(f"embedding '{embedding.name}' has no SD1/SD2 vectors to save in A1111's .pt layout")
    return {"string_to_token": {"*": A1111_TOKEN},
            "string_to_param": {"*": vectors.detach().float().cpu().clone()},
            "name": embedding.name, "step": int(embedding.step or 0),
            "sd_checkpoint": embedding.sd_checkpoint, "sd_checkpoint_name": embedding.sd_checkpoint_name}


def embedding_bytes(embedding: Embedding) -> bytes:
    buffer = io.BytesIO()
    torch.save(a1111_embedding_dict(embedding), buffer)
    return buffer.getvalue()


def save_embedding(embedding: Embedding, path: Path) -> None:
    """Atomically: a reader (or a full disk) sees the old file or the new one, never half of one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(Path(path), embedding_bytes(embedding))
