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
    embeds: torch.Tensor            # [1, 77 * chunks, width], or one row per image when a batch's prompts differ
    pooled: torch.Tensor | None     # [1, projection width], SDXL only

    @property
    def chunks(self) -> int:
        return self.embeds.shape[1] // (CHUNK_TOKENS + 2)

    def batch_embeds(self, images: int) -> torch.Tensor:
        """The sequence for a batch of `images`: the one prompt's repeated, or the batch's own rows."""
        return self.embeds.repeat(images, 1, 1) if self.embeds.shape[0] == 1 else self.embeds

    def batch_pooled(self, images: int) -> torch.Tensor:
        return self.pooled.repeat(images, 1) if self.pooled.shape[0] == 1 else self.pooled

    @staticmethod
    def stacked(rows: list[Conditioning]) -> Conditioning:
        return Conditioning(torch.cat([row.embeds for row in rows]),
                            None if rows[0].pooled is None else torch.cat([row.pooled for row in rows]))


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
    def _run_rows(self, encoder, key: str, chunks: list[PromptChunk], pad_id: int):
        """One encoder call for these chunks, a row each (generation passes one; training a batch's)."""
        from modules.networks.textual_inversion import vectors_inserted

        rows = []
        for chunk in chunks:
            ids = [BOS_ID] + chunk.tokens + [EOS_ID]
            rows.append(ids + [pad_id] * (CHUNK_TOKENS + 2 - len(ids)))
        tokens = torch.tensor(rows, dtype=torch.long, device=input_device(encoder))
        with vectors_inserted(encoder, key, [chunk.fixes for chunk in chunks]):
            return encoder(tokens, output_hidden_states=True)

    def _weights(self, chunk: PromptChunk, like: torch.Tensor) -> torch.Tensor:
        weights = [1.0] + chunk.multipliers + [1.0] * (CHUNK_TOKENS + 1 - len(chunk.multipliers))
        return torch.tensor(weights, dtype=like.dtype, device=like.device).reshape(1, -1, 1)

    def _emphasise_rows(self, hidden: torch.Tensor, chunks: list[PromptChunk]) -> torch.Tensor:
        if self.emphasis not in ("Original", "No norm") or all(w == 1.0 for c in chunks for w in c.multipliers):
            return hidden
        weighted = hidden * torch.cat([self._weights(chunk, hidden) for chunk in chunks])
        if self.emphasis == "Original":   # multiply, then restore each row's original mean (A1111 EmphasisOriginal)
            weighted = weighted * (hidden.mean(dim=(1, 2), keepdim=True) / weighted.mean(dim=(1, 2), keepdim=True))
        return weighted

    def _encode_chunk(self, chunk: PromptChunk):
        return self._encode_rows([chunk])

    def _encode_rows(self, chunks: list[PromptChunk]):
        """(hidden states [rows, 77, width], SDXL's pooled projection [rows, width] or None) of these chunks."""
        pipe, family = self.pipeline, self.family
        if not family.xl:
            encoder = pipe.text_encoder
            out = self._run_rows(encoder, "", chunks, family.text_encoder.pad_id)
            if self.clip_skip > 1:
                # A1111 clip skip: an earlier layer's output, still passed through the final layer norm.
                hidden = _final_norm(encoder)(out.hidden_states[-self.clip_skip])
            else:
                hidden = out.last_hidden_state
            return self._emphasise_rows(hidden, chunks), None
        # SDXL: penultimate hidden states of each encoder side by side, plus the second one's pooled projection.
        # A1111 ignores Clip skip for SDXL by default (setting sdxl_clip_l_skip off), and so do we.
        hidden = []
        if pipe.text_encoder is not None:
            out = self._run_rows(pipe.text_encoder, "clip_l", chunks, family.text_encoder.pad_id)
            hidden.append(self._emphasise_rows(out.hidden_states[-2], chunks))
        out = self._run_rows(pipe.text_encoder_2, "clip_g", chunks, family.text_encoder_2.pad_id)
        hidden.append(self._emphasise_rows(out.hidden_states[-2], chunks))
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
        # a weight is a float, or a [images, 1, 1, 1] tensor when a batch's prompts differ (schedule_batch)
        return len(self.positive) > 1 or bool(torch.any(torch.as_tensor(self.positive[0][0]) != 1.0))

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


def _texts(prompt: str, negative: str, steps: int):
    parts = splitting.split_and(prompt)
    plans = schedules.get_schedules([text for text, _ in parts], steps)
    negative_plan = schedules.get_schedules([negative], steps)[0]
    return parts, plans, negative_plan


def _chunk_count(encoder: TextEncoder, texts: set[str]) -> int:
    chunks = max(len(encoder.chunks(text)) for text in texts)
    if chunks > limits.MAX_CHUNKS:   # (embeddings can make a prompt longer than the request's check saw)
        raise limits.PromptTooLarge(limits.too_many_chunks(chunks))
    return chunks


def schedule(encoder: TextEncoder, prompt: str, negative: str, steps: int,
             chunks: int | None = None) -> ScheduledConditioning:
    """Encode every text the prompt (each AND part) and negative prompt take over the steps, all to the same
    chunk count (the UNet batch needs one sequence length)."""
    parts, plans, negative_plan = _texts(prompt, negative, steps)
    if chunks is None:
        chunks = _chunk_count(encoder, {text for plan in plans + [negative_plan] for _, text in plan})
    return ScheduledConditioning(
        positive=[(weight, [(end, encoder.encode(text, chunks)) for end, text in plan])
                  for (_, weight), plan in zip(parts, plans)],
        negative=[(end, encoder.encode(text, chunks)) for end, text in negative_plan],
    )


def _merged(schedules_: list[Schedule]) -> Schedule:
    """One schedule whose conditioning holds each image's row: it changes wherever any image's does."""
    ends = sorted({end for one in schedules_ for end, _ in one})
    return [(end, Conditioning.stacked([_at(one, end) for one in schedules_])) for end in ends]


def schedule_batch(encoder: TextEncoder, prompts: list[str], negatives: list[str],
                   steps: int) -> ScheduledConditioning:
    """The conditioning of a batch whose images have their own prompts (A1111's per-image `p.all_prompts`): each
    image's schedule, all texts at the batch's longest chunk count (as A1111 pads a batch), stacked image by
    image. AND parts are matched by position; an image with fewer parts has the missing ones at weight 0."""
    if len(set(prompts)) == 1 and len(set(negatives)) == 1:
        return schedule(encoder, prompts[0], negatives[0], steps)
    texts = [_texts(prompt, negative, steps) for prompt, negative in zip(prompts, negatives)]
    chunks = _chunk_count(encoder, {text for parts, plans, negative_plan in texts
                                    for plan in plans + [negative_plan] for _, text in plan})
    images = [schedule(encoder, prompt, negative, steps, chunks) for prompt, negative in zip(prompts, negatives)]
    positive = []
    for index in range(max(len(image.positive) for image in images)):
        picked = [image.positive[index] if index < len(image.positive) else (0.0, image.positive[0][1])
                  for image in images]
        weights = [weight for weight, _ in picked]
        weight = weights[0] if len(set(weights)) == 1 else torch.tensor(weights).view(-1, 1, 1, 1)
        positive.append((weight, _merged([one for _, one in picked])))
    return ScheduledConditioning(positive=positive, negative=_merged([image.negative for image in images]))
