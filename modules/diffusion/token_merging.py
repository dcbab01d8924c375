"""Token merging (ToMe for Stable Diffusion): A1111's token_merging_ratio settings, on the `tomesd` library A1111 uses.

Self-attention in the UNet's highest-resolution blocks merges the most similar tokens before attending and
unmerges after, so a ratio of 0.5 attends over about half the tokens: faster at large sizes, at the cost of some
detail. It changes the image, so the ratio is written to the infotext ("Token merging ratio", "... hr").
A1111's arguments: merge only self-attention, deterministic (no random partition, which some samplers dislike).
"""
from __future__ import annotations

import contextlib


def ratios(options, *, image_mode: bool) -> tuple[float, float]:
    """(first pass, hires pass) ratios from the settings, as A1111's `get_token_merging_ratio` picks them: img2img
    has its own setting (0: the main one), and the hires pass its own (0: the first pass's)."""
    first = float(options.token_merging_ratio)
    if image_mode and float(options.token_merging_ratio_img2img) > 0:
        first = float(options.token_merging_ratio_img2img)
    hires = float(options.token_merging_ratio_hr) or first
    return first, hires


@contextlib.contextmanager
def merged_tokens(unet, ratio: float):
    """The UNet with token merging at `ratio` for the block (nothing at 0); unpatched afterwards, whatever happens."""
    if ratio <= 0:
        yield
        return
    import tomesd

    tomesd.apply_patch(unet, ratio=ratio, use_rand=False, merge_attn=True, merge_crossattn=False, merge_mlp=False)
    try:
        yield
    finally:
        tomesd.remove_patch(unet)
