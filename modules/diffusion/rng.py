"""Seeds → noise, exactly as A1111 v1.10 draws it (its `modules/rng.py`), so that a seed gives A1111's picture.

Each image of a batch has its own generator, seeded with the image's seed. Its first draw is the initial noise
(variation seeds blended in by slerp, "resize seed from" pasted in the middle); the noise that ancestral and SDE
samplers add at every step is drawn next from the same generator (`ImageRNG.next`), so an image comes out the
same whether it was made alone or in a batch.

Three sources, as A1111's "Random number generator source" setting:
- "GPU": torch's generator on the device that generates (A1111's default; on a machine without CUDA it is the CPU);
- "CPU": torch's CPU generator wherever the model runs;
- "NV": NVIDIA's GPU noise computed on any device (Philox4x32-10 with a Box-Muller transform, the way torch's CUDA
  `randn` fills a tensor), so that a CPU or a Mac reproduces pictures made on an NVIDIA card.
"""
from __future__ import annotations

import numpy as np
import torch

SOURCES = ("GPU", "CPU", "NV")
DEFAULT_SOURCE = "GPU"   # A1111's default; an infotext without an "RNG" key means this one


# ---------------------------------------------------------------- NV: torch's CUDA randn on any device

_PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_PHILOX_KEY_STEPS = (0x9E3779B9, 0xBB67AE85)
# Box-Muller's uniform scales, rounded to float32 as CUDA's curand_normal rounds them.
_UNIFORM_SCALE = np.float32(2.3283064e-10)
_ANGLE_SCALE = np.float32(2.3283064e-10 * 6.2831855)


def _high_low(product: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The high and low 32-bit halves of 64-bit products."""
    return (product >> np.uint64(32)).astype(np.uint32), (product & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _philox(counter: list[np.ndarray], key: list[np.ndarray], rounds: int = 10) -> list[np.ndarray]:
    """Philox4x32 (Salmon et al. 2011): `counter` four uint32 lanes, `key` two; returns the four output lanes."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_index in range(rounds):
        if round_index:
            k0 = (k0 + np.uint32(_PHILOX_KEY_STEPS[0])).astype(np.uint32)
            k1 = (k1 + np.uint32(_PHILOX_KEY_STEPS[1])).astype(np.uint32)
        hi0, lo0 = _high_low(c0.astype(np.uint64) * np.uint64(_PHILOX_MULTIPLIERS[0]))
        hi1, lo1 = _high_low(c2.astype(np.uint64) * np.uint64(_PHILOX_MULTIPLIERS[1]))
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return [c0, c1, c2, c3]


class PhiloxGenerator:
    """Normal noise as torch.randn(..., device="cuda") gives it for a seed: each call fills one tensor, the n-th
    number from counter (call, 0, n, 0) keyed by the seed, the first output lane of a Box-Muller pair."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.offset = 0

    def randn(self, shape) -> np.ndarray:
        count = int(np.prod(shape))
        index = np.arange(count, dtype=np.uint32)
        zeros = np.zeros(count, dtype=np.uint32)
        counter = [np.full(count, self.offset, dtype=np.uint32), zeros, index, zeros.copy()]
        self.offset += 1
        key = [np.full(count, self.seed & 0xFFFFFFFF, dtype=np.uint32),
               np.full(count, (self.seed >> 32) & 0xFFFFFFFF, dtype=np.uint32)]
        lanes = _philox(counter, key)
        # uint32 × float32 is computed in float64 before the final rounding, as the reference does.
        uniform = lanes[0] * _UNIFORM_SCALE + _UNIFORM_SCALE / 2
        angle = lanes[1] * _ANGLE_SCALE + _ANGLE_SCALE / 2
        return (np.sqrt(-2.0 * np.log(uniform)) * np.sin(angle)).astype(np.float32).reshape(shape)


# ---------------------------------------------------------------- the three sources


def noise_device(source: str, device: torch.device) -> torch.device:
    """Where torch draws the noise for `source` when the model runs on `device`."""
    if source == "GPU" and device.type not in ("mps",):
        return device
    return torch.device("cpu")


def create_generator(seed: int, source: str, device: torch.device):
    if source == "NV":
        return PhiloxGenerator(seed)
    return torch.Generator(noise_device(source, device)).manual_seed(int(seed))


def randn(shape, generator, source: str, device: torch.device) -> torch.Tensor:
    """The generator's next draw of `shape`, float32, on `device`."""
    if source == "NV":
        return torch.from_numpy(generator.randn(shape)).to(device)
    return torch.randn(shape, generator=generator, device=noise_device(source, device)).to(device)


def randn_local(seed: int, shape, source: str, device: torch.device) -> torch.Tensor:
    """A seed's first draw, from a generator of its own (also what the Brownian tree of the SDE samplers uses)."""
    return randn(shape, create_generator(seed, source, device), source, device)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical blend of two noise tensors (C, H, W), normalised along dim 1 as A1111 does; where they
    are almost parallel, A1111's linear fallback (which weighs `low` by `val`)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageRNG:
    """The noise of one batch: `next()` first gives the initial noise (batch, C, H, W), then each further call
    one more draw per image from the image's own generator (the noise samplers add during sampling)."""

    def __init__(self, shape: tuple[int, int, int], seeds: list[int], *, subseeds: list[int] | None = None,
                 subseed_strength: float = 0.0, resize_from: tuple[int, int] | None = None,
                 source: str = DEFAULT_SOURCE, device: torch.device = torch.device("cpu"),
                 eta_noise_seed_delta: int = 0):
        self.shape = tuple(int(v) for v in shape)
        self.seeds = list(seeds)
        self.subseeds = subseeds
        self.subseed_strength = subseed_strength
        self.resize_from = resize_from   # (height, width) in pixels, or None
        self.source = source
        self.device = device
        self.eta_noise_seed_delta = eta_noise_seed_delta
        self.generators = [create_generator(seed, source, device) for seed in self.seeds]
        self.is_first = True

    def _randn(self, shape, generator) -> torch.Tensor:
        return randn(shape, generator, self.source, self.device)

    def first(self) -> torch.Tensor:
        channels, height, width = self.shape
        noise_shape = self.shape if self.resize_from is None else \
            (channels, self.resize_from[0] // 8, self.resize_from[1] // 8)
        images = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else self.subseeds[i]
                subnoise = randn_local(subseed, noise_shape, self.source, self.device)
            if noise_shape != self.shape:
                noise = randn_local(seed, noise_shape, self.source, self.device)
            else:
                noise = self._randn(self.shape, generator)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:   # "resize seed from": the old size's noise pasted in the middle
                full = self._randn(self.shape, generator)
                dx, dy = (width - noise_shape[2]) // 2, (height - noise_shape[1]) // 2
                w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
                h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx, ty = max(dx, 0), max(dy, 0)
                sx, sy = max(-dx, 0), max(-dy, 0)
                full[:, ty:ty + h, tx:tx + w] = noise[:, sy:sy + h, sx:sx + w]
                noise = full
            images.append(noise)
        if self.eta_noise_seed_delta:   # A1111's ENSD: the step noise comes from seed + delta
            self.generators = [create_generator(seed + self.eta_noise_seed_delta, self.source, self.device)
                               for seed in self.seeds]
        return torch.stack(images).to(self.device)

    def next(self) -> torch.Tensor:
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([self._randn(self.shape, generator) for generator in self.generators]).to(self.device)
