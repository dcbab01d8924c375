"""Prompt text → CLIP token ids laid into chunks of 75, the way A1111 lays them (`sd_hijack_clip.tokenize_line`).

A prompt is parsed into weighted pieces (emphasis) and tokenized; `BREAK` closes a chunk, a chunk that fills up
moves the words after its last comma (if within 20 tokens) to the next one, and a textual-inversion name is
replaced by room for the embedding's vectors without being split across chunks. No model is needed: the UI's
token counter and the request's limits use this too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from modules.models.tokenizer import clip_tokenizer
from modules.prompts import attention, schedules

CHUNK_TOKENS = 75
COMMA_BACKTRACK = 20          # A1111's comma_padding_backtrack default
_COMMA_ID = 267               # "," in the CLIP vocabulary


@dataclass
class PromptChunk:
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, object]] = field(default_factory=list)   # (offset in chunk, textual-inversion Embedding)


def _token_ids(text: str) -> list[int]:
    return clip_tokenizer()(text, add_special_tokens=False, truncation=False).input_ids if text else []


def _weighted_pieces(text: str, emphasis: str) -> list[tuple[str, float]]:
    if emphasis == "None":   # brackets (and BREAK) are literal text, as in A1111
        return [(text, 1.0)]
    pieces = attention.parse_prompt_attention(text)
    if emphasis == "Ignore":
        return [(t, w if t == "BREAK" and w == -1 else 1.0) for t, w in pieces]
    return pieces


def split_into_chunks(text: str, *, emphasis: str = "Original", embeddings: dict | None = None) -> list[PromptChunk]:
    """A1111's `tokenize_line`: weighted tokens laid into 75-token chunks (always at least one)."""
    from modules.networks.textual_inversion import find_embeddings_in_tokens, name_token_ids

    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    last_comma = -1

    def next_chunk():
        nonlocal chunk, last_comma
        chunks.append(chunk)
        chunk = PromptChunk()
        last_comma = -1

    for piece, weight in _weighted_pieces(text, emphasis):
        if piece == "BREAK" and weight == -1:
            next_chunk()
            continue
        tokens = _token_ids(piece)
        matches = dict(find_embeddings_in_tokens(tokens, embeddings, _token_ids)) if embeddings else {}
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == _COMMA_ID:
                last_comma = len(chunk.tokens)
            elif (len(chunk.tokens) == CHUNK_TOKENS and last_comma != -1
                  and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK):
                # Move the words after the last comma to the next chunk instead of cutting them in two
                # (with any embedding among them: A1111 leaves those behind, in the padding).
                cut = last_comma + 1
                moved = chunk.tokens[cut:], chunk.multipliers[cut:], [(o - cut, e) for o, e in chunk.fixes if o >= cut]
                del chunk.tokens[cut:], chunk.multipliers[cut:]
                chunk.fixes = [(o, e) for o, e in chunk.fixes if o < cut]
                next_chunk()
                chunk.tokens, chunk.multipliers, chunk.fixes = moved
            if len(chunk.tokens) == CHUNK_TOKENS:
                next_chunk()
            embedding = matches.get(position)
            if embedding is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue
            count = embedding.vector_count
            if len(chunk.tokens) + count > CHUNK_TOKENS:
                next_chunk()
            chunk.fixes.append((len(chunk.tokens), embedding))
            chunk.tokens += [0] * count
            chunk.multipliers += [weight] * count
            position += len(name_token_ids(embedding.name, _token_ids))
    if chunk.tokens or not chunks:
        next_chunk()
    return chunks


def token_count(text: str, steps: int = 20) -> tuple[int, int]:
    """(tokens used, current limit) for the UI counter: "80/150" means 80 tokens in two chunks.

    As A1111 counts it: comments and network tags removed, AND parts and every prompt-editing variant
    counted, the largest shown.
    """
    used = 0
    for variant in schedules.prompt_variants_for_counting(text, steps):
        chunks = split_into_chunks(variant)
        used = max(used, (len(chunks) - 1) * CHUNK_TOKENS + len(chunks[-1].tokens))
    return used, max(1, -(-used // CHUNK_TOKENS)) * CHUNK_TOKENS
