"""A1111's `modules.rng`: seeds → noise exactly as A1111 draws it, for extensions that make their own noise.
Forwards to the generation's own `diffusion/rng.py`, with the RNG source and ENSD from the settings."""
from __future__ import annotations

import torch

from modules import devices, shared
from modules.diffusion import rng as _rng


def _source() -> str:
    return str(shared.opts.randn_source)


def randn(seed: int, shape) -> torch.Tensor:
    """A1111's: noise of `shape` from a new generator for `seed`, on the device."""
    return _rng.randn_local(int(seed), shape, _source(), devices.device)


def randn_local(seed: int, shape) -> torch.Tensor:
    """A1111's: the same, without touching any global generator (none is touched here either)."""
    return _rng.randn_local(int(seed), shape, _source(), devices.device)


def randn_like(x: torch.Tensor) -> torch.Tensor:
    """A1111's: noise like `x` from the global torch generator (CPU under the CPU source, as A1111 draws it)."""
    device = _rng.noise_device(_source(), x.device)
    return torch.randn(x.shape, dtype=x.dtype, device=device).to(x.device)


def randn_without_seed(shape, generator=None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=_rng.noise_device(_source(), devices.device)) \
        .to(devices.device)


slerp = _rng.slerp


class ImageRNG(_rng.ImageRNG):
    """A1111's ImageRNG(shape, seeds, subseeds, subseed_strength, seed_resize_from_h, seed_resize_from_w): `first()`
    then `next()`, one generator per image, drawn with the server's RNG source and ENSD."""

    def __init__(self, shape, seeds, subseeds=None, subseed_strength: float = 0.0, seed_resize_from_h: int = 0,
                 seed_resize_from_w: int = 0):
        resize_from = (seed_resize_from_h, seed_resize_from_w) if seed_resize_from_h > 0 and seed_resize_from_w > 0 \
            else None
        super().__init__(tuple(shape), list(seeds), subseeds=list(subseeds) if subseeds else None,
                         subseed_strength=subseed_strength, resize_from=resize_from, source=_source(),
                         device=devices.device, eta_noise_seed_delta=int(shared.opts.eta_noise_seed_delta))
