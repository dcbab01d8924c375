"""Embedding names in a prompt's tokens: found (A1111's `find_embedding_at_position`), replaced by room for
the vectors, laid into 75-token chunks without splitting an embedding; and the infotext's "TI hashes".
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


def expand_tokens(token_ids: list[int], matches: list[tuple[int, Embedding]],
                  tokenize: Tokenize | None = None) -> tuple[list[int], list[tuple[int, Embedding]]]:
    """Replace each matched name's tokens by `vector_count` placeholder ids (PLACEHOLDER_ID).

    Returns the new token list and the (position in it, embedding) fixes. `tokenize` must be the one the
    matches were found with (it gives the length of each name).
    """
    out: list[int] = []
    fixes: list[tuple[int, Embedding]] = []
    position = 0
    for start, embedding in sorted(matches, key=lambda match: match[0]):
        if start < position:
            raise ValueError("overlapping embedding matches")
        out += token_ids[position:start]
        fixes.append((len(out), embedding))
        out += [PLACEHOLDER_ID] * embedding.vector_count
        position = start + len(name_token_ids(embedding.name, tokenize))
    out += token_ids[position:]
    return out, fixes


def chunk_expanded_tokens(token_ids: list[int], fixes: list[tuple[int, Embedding]], size: int = 75
                      ) -> list[tuple[list[int], list[tuple[int, Embedding]]]]:
    """Expanded tokens → chunks of at most `size` tokens, (tokens, fixes with offsets in the chunk) each.

    An embedding never straddles two chunks: if its vectors do not fit in what is left of the current chunk,
    the chunk ends early (A1111 pads it) and the embedding starts the next one. Short chunks are returned
    unpadded; the encoder pads them (BOS + tokens + EOS + padding). Always at least one chunk.
    """
    at = dict(fixes)
    chunks: list[tuple[list[int], list[tuple[int, Embedding]]]] = []
    tokens: list[int] = []
    chunk_fixes: list[tuple[int, Embedding]] = []
    position = 0
    while position < len(token_ids):
        embedding = at.get(position)
        width = embedding.vector_count if embedding is not None else 1
        if len(tokens) + width > size and tokens:
            chunks.append((tokens, chunk_fixes))
            tokens, chunk_fixes = [], []
        if embedding is not None:
            chunk_fixes.append((len(tokens), embedding))
        tokens += token_ids[position:position + width]
        position += width
    if tokens or not chunks:
        chunks.append((tokens, chunk_fixes))
    return chunks


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
