"""Embedding names in a prompt's tokens, found as A1111's `find_embedding_at_position` finds them (prompts/chunks.py
lays the vectors into 75-token chunks), and the infotext's "TI hashes".
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from modules.networks.textual_inversion.files import Embedding

PLACEHOLDER_ID = 0   # token id A1111 puts where the vectors go ("!"): never BOS/EOS, so pooling is unaffected

Tokenize = Callable[[str], list[int]]


def default_tokenize(text: str) -> list[int]:
    from modules.models.tokenizer import clip_tokenizer

    return clip_tokenizer()(text, add_special_tokens=False, truncation=False).input_ids if text else []


@functools.lru_cache(maxsize=8192)
def _name_ids(tokenize: Tokenize, name: str) -> tuple[int, ...]:
    return tuple(tokenize(name))


def name_token_ids(name: str, tokenize: Tokenize | None = None) -> tuple[int, ...]:
    """The prompt tokens that stand for an embedding: its name tokenized without BOS/EOS (cached)."""
    return _name_ids(tokenize or default_tokenize, name)


def find_embeddings_in_tokens(token_ids: list[int], embeddings: dict[str, Embedding],
                              tokenize: Tokenize | None = None) -> list[tuple[int, Embedding]]:
    """(position, embedding) for every embedding name in the token ids, left to right, never overlapping.

    A1111's `find_embedding_at_position`: names are grouped by their first token and tried longest first, so
    "bad-hands-5" wins over "bad" where both match.
    """
    if not embeddings or not token_ids:
        return []
    lookup: dict[int, list[tuple[tuple[int, ...], Embedding]]] = {}
    for name, embedding in embeddings.items():
        ids = name_token_ids(name, tokenize)
        if ids:
            lookup.setdefault(ids[0], []).append((ids, embedding))
    for candidates in lookup.values():
        candidates.sort(key=lambda item: len(item[0]), reverse=True)    # stable: ties keep folder order
    matches: list[tuple[int, Embedding]] = []
    position = 0
    tokens = list(token_ids)
    while position < len(tokens):
        for ids, embedding in lookup.get(tokens[position], ()):
            if tuple(tokens[position:position + len(ids)]) == ids:
                matches.append((position, embedding))
                position += len(ids)
                break
        else:
            position += 1
    return matches


def ti_hashes(used: Iterable[Embedding]) -> str:
    """Infotext value of "TI hashes": `name: shorthash, ...` (A1111 drops ':' and ',' from the names)."""
    parts, seen = [], set()
    for embedding in used:
        if embedding.name in seen:
            continue
        seen.add(embedding.name)
        try:
            shorthash = embedding.shorthash()
        except OSError:
            continue
        parts.append(f"{embedding.name.replace(':', '').replace(',', '')}: {shorthash}")
    return ", ".join(parts)
