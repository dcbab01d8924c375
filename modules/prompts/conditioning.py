"""Prompt text → text-encoder conditioning, the way A1111 builds it (`sd_hijack_clip.py`).

A prompt is parsed into weighted pieces (emphasis), tokenized, and laid into chunks of 75 tokens: `BREAK`
closes a chunk, a chunk that fills up moves the words after its last comma (if within 20 tokens) to the
next one, and a textual-inversion name is replaced by the embedding's vectors without being split across
chunks. Each chunk is wrapped in BOS/EOS, padded to 77 and encoded on its own; the results are concatenated
along the sequence axis and the emphasis weights applied to them (mode "Original" restores the mean
afterwards, "No norm" does not).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from modules import stop_points
from modules.devices import input_device
from modules.models.tokenizer import BOS_ID, EOS_ID, clip_tokenizer
from modules.prompts import limits, parser

CHUNK_TOKENS = 75
COMMA_BACKTRACK = 20          # A1111's comma_padding_backtrack default
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")
_COMMA_ID = 267               # "," in the CLIP vocabulary


@dataclass
class Conditioning:
    embeds: torch.Tensor            # [1, 77 * chunks, width]
    pooled: torch.Tensor | None     # [1, projection width], SDXL only

    @property
    def chunks(self) -> int:
        return self.embeds.shape[1] // (CHUNK_TOKENS + 2)


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
    pieces = parser.parse_prompt_attention(text)
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
    for variant in parser.prompt_variants_for_counting(text, steps):
        chunks = split_into_chunks(variant)
        used = max(used, (len(chunks) - 1) * CHUNK_TOKENS + len(chunks[-1].tokens))
    return used, max(1, -(-used // CHUNK_TOKENS)) * CHUNK_TOKENS


def _final_norm(encoder):
    return getattr(encoder, "text_model", encoder).final_layer_norm


class TextEncoder:
    """Encodes prompts for one loaded model and one job (clip skip, emphasis mode, embeddings)."""

    def __init__(self, pipeline, family: str, *, clip_skip: int = 1, emphasis: str = "Original",
                 embeddings: dict | None = None, should_stop: Callable[[], bool] | None = None):
        self.pipeline = pipeline
        self.should_stop = should_stop   # checked before each chunk: stop_points.Interrupted once it is True
        self.family = family
        self.clip_skip = clip_skip
        self.emphasis = emphasis
        self.embeddings = embeddings or {}
        self.used_embeddings: dict[str, object] = {}
        self._cache: dict[tuple[str, int], Conditioning] = {}
        self._chunk_cache: dict[tuple, tuple] = {}   # padding chunks and repeated ones are encoded once

    def chunks(self, text: str) -> list[PromptChunk]:
        return split_into_chunks(text, emphasis=self.emphasis, embeddings=self.embeddings)

    def encode(self, text: str, min_chunks: int = 1) -> Conditioning:
        key = (text, min_chunks)
        if key not in self._cache:
            chunks = self.chunks(text)
            chunks += [PromptChunk() for _ in range(min_chunks - len(chunks))]
            parts, pooled = [], None
            for index, chunk in enumerate(chunks):
                if self.should_stop is not None:
                    stop_points.check(self.should_stop)
                for _, embedding in chunk.fixes:
                    self.used_embeddings[embedding.name] = embedding
                hidden, chunk_pooled = self._encode_chunk_once(chunk)
                parts.append(hidden)
                if index == 0:
                    pooled = chunk_pooled    # A1111 takes the pooled output of the first chunk
            self._cache[key] = Conditioning(torch.cat(parts, dim=1), pooled)
        return self._cache[key]

    def _encode_chunk_once(self, chunk: PromptChunk):
        if chunk.fixes:   # textual-inversion vectors: not worth a key
            return self._encode_chunk(chunk)
        key = (tuple(chunk.tokens), tuple(chunk.multipliers))
        if key not in self._chunk_cache:
            self._chunk_cache[key] = self._encode_chunk(chunk)
        return self._chunk_cache[key]

    @torch.inference_mode()
    def _run(self, encoder, key: str, chunk: PromptChunk, pad_id: int):
        from modules.networks.textual_inversion import vectors_inserted

        ids = [BOS_ID] + chunk.tokens + [EOS_ID]
        ids += [pad_id] * (CHUNK_TOKENS + 2 - len(ids))
        tokens = torch.tensor([ids], dtype=torch.long, device=input_device(encoder))
        with vectors_inserted(encoder, key, [chunk.fixes]):
            return encoder(tokens, output_hidden_states=True)

    def _weights(self, chunk: PromptChunk, like: torch.Tensor) -> torch.Tensor:
        weights = [1.0] + chunk.multipliers + [1.0] * (CHUNK_TOKENS + 1 - len(chunk.multipliers))
        return torch.tensor(weights, dtype=like.dtype, device=like.device).reshape(1, -1, 1)

    def _emphasise(self, hidden: torch.Tensor, chunk: PromptChunk) -> torch.Tensor:
        if self.emphasis not in ("Original", "No norm") or all(w == 1.0 for w in chunk.multipliers):
            return hidden
        weighted = hidden * self._weights(chunk, hidden)
        if self.emphasis == "Original":   # multiply, then restore the original mean (A1111 EmphasisOriginal)
            weighted = weighted * (hidden.mean() / weighted.mean())
        return weighted

    def _encode_chunk(self, chunk: PromptChunk):
        pipe = self.pipeline
        if self.family in ("sd1", "sd2"):
            encoder = pipe.text_encoder
            out = self._run(encoder, "", chunk, EOS_ID if self.family == "sd1" else 0)
            if self.clip_skip > 1:
                # A1111 clip skip: an earlier layer's output, still passed through the final layer norm.
                hidden = _final_norm(encoder)(out.hidden_states[-self.clip_skip])
            else:
                hidden = out.last_hidden_state
            return self._emphasise(hidden, chunk), None
        # SDXL: penultimate hidden states of each encoder side by side, plus the second one's pooled projection.
        # A1111 ignores Clip skip for SDXL by default (setting sdxl_clip_l_skip off), and so do we.
        hidden = []
        if pipe.text_encoder is not None:
            out = self._run(pipe.text_encoder, "clip_l", chunk, EOS_ID)
            hidden.append(self._emphasise(out.hidden_states[-2], chunk))
        out = self._run(pipe.text_encoder_2, "clip_g", chunk, 0)
        hidden.append(self._emphasise(out.hidden_states[-2], chunk))
        return torch.cat(hidden, dim=-1), out.text_embeds


Schedule = list[tuple[int, Conditioning]]   # (last 0-based step it applies to, conditioning), in order


def _at(schedule: Schedule, step: int) -> Conditioning:
    # A1111 (`reconstruct_cond_batch`) uses the first entry with `step <= end_at`: `[a:b:0.5]` over 20 steps is
    # [(10, a), (20, b)], so steps 0..10 use a.
    for end_at, cond in schedule:
        if step <= end_at:
            return cond
    return schedule[-1][1]


@dataclass
class ScheduledConditioning:
    """Conditioning for every sampling step: prompt editing and alternation change it mid-run, and
    `A AND B :0.7` gives several weighted prompts (composable diffusion)."""

    positive: list[tuple[float, Schedule]]      # one (weight, schedule) per AND part
    negative: Schedule

    @property
    def composable(self) -> bool:
        return len(self.positive) > 1 or self.positive[0][0] != 1.0

    def at(self, step: int) -> tuple[Conditioning, Conditioning]:
        """The (prompt, negative prompt) conditioning for 0-based step `step` (the first AND part's prompt)."""
        return _at(self.positive[0][1], step), _at(self.negative, step)

    def parts_at(self, step: int) -> list[tuple[float, Conditioning]]:
        return [(weight, _at(schedule, step)) for weight, schedule in self.positive]

    @property
    def changes(self) -> bool:
        return any(len(schedule) > 1 for _, schedule in self.positive) or len(self.negative) > 1

    def changes_at(self, step: int) -> bool:
        """Whether step `step` uses different conditioning from the step before it."""
        now, before = self.at(step), self.at(step - 1)
        return now[0] is not before[0] or now[1] is not before[1]


def schedule(encoder: TextEncoder, prompt: str, negative: str, steps: int) -> ScheduledConditioning:
    """Encode every text the prompt (each AND part) and negative prompt take over the steps, all to the same
    chunk count (the UNet batch needs one sequence length)."""
    parts = parser.split_and(prompt)
    plans = parser.get_schedules([text for text, _ in parts], steps)
    negative_plan = parser.get_schedules([negative], steps)[0]
    texts = {text for plan in plans + [negative_plan] for _, text in plan}
    chunks = max(len(encoder.chunks(text)) for text in texts)
    if chunks > limits.MAX_CHUNKS:   # (embeddings can make a prompt longer than the request's check saw)
        raise limits.PromptTooLarge(limits.too_many_chunks(chunks))
    return ScheduledConditioning(
        positive=[(weight, [(end, encoder.encode(text, chunks)) for end, text in plan])
                  for (_, weight), plan in zip(parts, plans)],
        negative=[(end, encoder.encode(text, chunks)) for end, text in negative_plan],
    )
