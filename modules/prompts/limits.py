"""How much one prompt may ask for: AND parts, extra-network tags and 75-token chunks.

Each AND part is one more UNet call per step, each chunk 77 more tokens every cross-attention reads, each tag a
network to load: without caps one 100 KB prompt holds the queue for an hour. A1111 has none; these are far
above what prompts written by hand use (a long one has 3-6 chunks, a composition 2-5 AND parts).
"""
from __future__ import annotations

from modules.prompts import chunks, splitting

MAX_AND_PARTS = 32
MAX_NETWORK_TAGS = 64
MAX_CHUNKS = 150   # 11,250 tokens: a 10,000-token prompt runs whole, as in A1111

# A chunk holds at least 55 tokens (a comma moves at most 20 to the next) and a token covers at least one
# character, so a text shorter than this has at most MAX_CHUNKS chunks before BREAKs: no need to tokenize it.
_CHARS_SURELY_WITHIN = 55 * (MAX_CHUNKS - 1)


class PromptTooLarge(ValueError):
    pass


def check(prompt: str, *, positive: bool = True) -> None:
    """Raise PromptTooLarge naming the cap a prompt goes over (AND parts count in positive prompts only)."""
    text, tags = splitting.extract_networks(splitting.strip_comments(prompt))
    if len(tags) > MAX_NETWORK_TAGS:
        raise PromptTooLarge(f"{len(tags)} extra-network tags (<lora:…> and the like); at most {MAX_NETWORK_TAGS} "
                             "(the same network named twice counts once when it is applied)")
    parts = [part for part, _ in splitting.split_and(text)] if positive else [text]
    if len(parts) > MAX_AND_PARTS:
        raise PromptTooLarge(f"{len(parts)} AND parts; at most {MAX_AND_PARTS}")
    for part in parts:
        check_chunks(part)


def check_chunks(text: str) -> None:
    breaks = text.count("BREAK")
    if len(text) + 55 * breaks <= _CHARS_SURELY_WITHIN:
        return
    count = len(chunks.split_into_chunks(text))   # the tokenizer: only for long texts
    if count > MAX_CHUNKS:
        raise PromptTooLarge(too_many_chunks(count))


def too_many_chunks(count: int) -> str:
    return (f"{count} chunks of 75 tokens (BREAK starts a new one); at most {MAX_CHUNKS} "
            f"({MAX_CHUNKS * 75} tokens)")
