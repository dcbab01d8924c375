"""Initial noise from seeds, as A1111 makes it: one generator per image, variation seeds by slerp,
and "resize seed from" by generating at the old size and pasting the centre."""
from __future__ import annotations

import random

import torch

MAX_SEED = 2**32 - 1


def resolve_seed(seed: int) -> int:
    """-1 (or any negative) means random, as in A1111."""
    return random.randint(0, MAX_SEED) if seed is None or seed < 0 else int(seed)


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (A1111 `processing.slerp`)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * (1 - t) + high * t
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so).unsqueeze(1) * low + (torch.sin(t * omega) / so).unsqueeze(1) * high


def _randn(seed: int, shape: tuple[int, ...], device: torch.device, source: str) -> torch.Tensor:
    # CPU noise is the default: the same seed gives the same image on any machine and GPU.
    gen_device = device if source == "GPU" and device.type == "cuda" else torch.device("cpu")
    generator = torch.Generator(gen_device).manual_seed(seed)
    return torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)


def image_noise(*, seed: int, subseed: int, subseed_strength: float, shape: tuple[int, int, int],
                resize_from: tuple[int, int] | None, device: torch.device, source: str) -> torch.Tensor:
    """Noise for one image, shape (channels, height/8, width/8)."""
    channels, height, width = shape
    noise_shape = shape if resize_from is None else (channels, resize_from[0] // 8, resize_from[1] // 8)
    noise = _randn(seed, noise_shape, device, source)
    if subseed_strength > 0:
        sub = _randn(subseed, noise_shape, device, source)
        noise = slerp(subseed_strength, noise.unsqueeze(0), sub.unsqueeze(0)).squeeze(0)
    if resize_from is not None:
        # Same composition at a new size: paste the old-size noise centred, fill the rest from the seed.
        target = _randn(seed, shape, device, source)
        dy, dx = (height - noise_shape[1]) // 2, (width - noise_shape[2]) // 2
        ty, tx = max(dy, 0), max(dx, 0)
        sy, sx = max(-dy, 0), max(-dx, 0)
        h, w = min(height - ty, noise_shape[1] - sy), min(width - tx, noise_shape[2] - sx)
        target[:, ty:ty + h, tx:tx + w] = noise[:, sy:sy + h, sx:sx + w]
        noise = target
    return noise


def batch_noise(seeds: list[int], subseeds: list[int], subseed_strength: float, shape: tuple[int, int, int],
                resize_from: tuple[int, int] | None, device: torch.device, source: str) -> torch.Tensor:
    return torch.stack([
        image_noise(seed=s, subseed=ss, subseed_strength=subseed_strength, shape=shape, resize_from=resize_from,
                    device=device, source=source)
        for s, ss in zip(seeds, subseeds)
    ]).to(device)
