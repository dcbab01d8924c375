"""Prompt text → text-encoder conditioning, the way A1111 builds it (`sd_hijack_clip.py`).

A prompt is laid into chunks of 75 weighted tokens (`chunks.py`), a textual-inversion name's place filled with
the embedding's vectors. Each chunk is wrapped in BOS/EOS, padded to 77 and encoded on its own; the results are
concatenated along the sequence axis and the emphasis weights applied to them (mode "Original" restores the
mean afterwards, "No norm" does not).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from modules.diffusion import stop_points
from modules.devices import input_device
from modules.models.families import Family
from modules.models.tokenizer import BOS_ID, EOS_ID
from modules.prompts import limits, schedules, splitting
from modules.prompts.chunks import CHUNK_TOKENS, PromptChunk, split_into_chunks


@dataclass
class Conditioning:
    embeds: torch.Tensor            # [1, 77 * chunks, width]
    pooled: torch.Tensor | None     # [1, projection width], SDXL only

    @property
    def chunks(self) -> int:
        return self.embeds.shape[1] // (CHUNK_TOKENS + 2)


def _final_norm(encoder):
    return getattr(encoder, "text_model", encoder).final_layer_norm


class TextEncoder:
    """Encodes prompts for one loaded model and one job (clip skip, emphasis mode, embeddings)."""

    def __init__(self, pipeline, family: Family, *, clip_skip: int = 1, emphasis: str = "Original",
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
        pipe, family = self.pipeline, self.family
        if not family.xl:
            encoder = pipe.text_encoder
            out = self._run(encoder, "", chunk, family.text_encoder.pad_id)
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
            out = self._run(pipe.text_encoder, "clip_l", chunk, family.text_encoder.pad_id)
            hidden.append(self._emphasise(out.hidden_states[-2], chunk))
        out = self._run(pipe.text_encoder_2, "clip_g", chunk, family.text_encoder_2.pad_id)
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
    parts = splitting.split_and(prompt)
    plans = schedules.get_schedules([text for text, _ in parts], steps)
    negative_plan = schedules.get_schedules([negative], steps)[0]
    texts = {text for plan in plans + [negative_plan] for _, text in plan}
    chunks = max(len(encoder.chunks(text)) for text in texts)
    if chunks > limits.MAX_CHUNKS:   # (embeddings can make a prompt longer than the request's check saw)
        raise limits.PromptTooLarge(limits.too_many_chunks(chunks))
    return ScheduledConditioning(
        positive=[(weight, [(end, encoder.encode(text, chunks)) for end, text in plan])
                  for (_, weight), plan in zip(parts, plans)],
        negative=[(end, encoder.encode(text, chunks)) for end, text in negative_plan],
    )
