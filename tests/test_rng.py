"""Seeds → noise as A1111 draws it (modules/diffusion/rng.py): one generator per image, the first draw the initial
noise and later draws the sampler's step noise; variation seeds blended per image; "resize seed from"; ENSD; the
NV source reproducing NVIDIA's GPU noise on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.diffusion import rng

SHAPE = (4, 8, 8)


def _randn(seed, shape=SHAPE, draws=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for _ in range(draws)]


def test_nv_source_gives_nvidias_gpu_noise():
    # torch.randn((3, 4), generator seeded 0, device="cuda") on an NVIDIA GPU, as A1111 documents it
    cuda = np.array([[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                     [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                     [-1.07454231, -0.36314407, -1.67105067, 2.26550497]], dtype=np.float32)
    generator = rng.PhiloxGenerator(0)
    np.testing.assert_allclose(generator.randn((3, 4)), cuda, atol=1e-6)
    assert not np.allclose(generator.randn((3, 4)), cuda)   # each call moves on, as a CUDA generator does
    assert not np.allclose(rng.PhiloxGenerator(2 ** 40 + 1).randn((3, 4)), cuda)   # the seed's high word counts


def test_each_image_has_its_own_generator_first_the_noise_then_the_steps():
    batch = rng.ImageRNG(SHAPE, [5, 6], source="CPU")
    first, second, third = batch.next(), batch.next(), batch.next()
    for index, seed in enumerate([5, 6]):
        expected = _randn(seed, draws=3)
        assert torch.equal(first[index], expected[0])
        assert torch.equal(second[index], expected[1])
        assert torch.equal(third[index], expected[2])
    alone = rng.ImageRNG(SHAPE, [6], source="CPU")
    assert torch.equal(alone.next()[0], first[1]) and torch.equal(alone.next()[0], second[1])


def test_gpu_source_without_a_gpu_is_the_cpu_generator():
    gpu = rng.ImageRNG(SHAPE, [7], source="GPU", device=torch.device("cpu")).next()
    assert torch.equal(gpu[0], _randn(7)[0])
    nv = rng.ImageRNG(SHAPE, [7], source="NV").next()
    np.testing.assert_array_equal(nv[0].numpy(), rng.PhiloxGenerator(7).randn(SHAPE))


def test_variation_seed_is_blended_per_image_over_its_own_channels():
    noise = rng.ImageRNG(SHAPE, [1, 2], subseeds=[10, 11], subseed_strength=0.3, source="CPU").next()
    for index, (seed, subseed) in enumerate([(1, 10), (2, 11)]):
        low, high = _randn(seed)[0], _randn(subseed)[0]
        # A1111's slerp on the image's (C, H, W) noise: norms along dim 1, the blend angle per (C, W)
        low_norm = low / torch.norm(low, dim=1, keepdim=True)
        high_norm = high / torch.norm(high, dim=1, keepdim=True)
        omega = torch.acos((low_norm * high_norm).sum(1))
        expected = (torch.sin(0.7 * omega) / torch.sin(omega)).unsqueeze(1) * low + \
                   (torch.sin(0.3 * omega) / torch.sin(omega)).unsqueeze(1) * high
        torch.testing.assert_close(noise[index], expected)
    alone = rng.ImageRNG(SHAPE, [2], subseeds=[11], subseed_strength=0.3, source="CPU").next()
    assert torch.equal(alone[0], noise[1])


def test_resize_seed_from_pastes_the_old_sizes_noise_in_the_middle():
    noise = rng.ImageRNG(SHAPE, [3], resize_from=(32, 32), source="CPU").next()[0]   # 32 px: 4 latent pixels
    old = _randn(3, (4, 4, 4))[0]
    full = _randn(3)[0]
    assert torch.equal(noise[:, 2:6, 2:6], old)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 2:6] = False
    assert torch.equal(noise[:, outside], full[:, outside])
    bigger = rng.ImageRNG((4, 4, 4), [3], resize_from=(64, 64), source="CPU").next()[0]   # cropped to the middle
    assert torch.equal(bigger, _randn(3, (4, 8, 8))[0][:, 2:6, 2:6])


def test_eta_noise_seed_delta_moves_the_step_noise_only():
    shifted = rng.ImageRNG(SHAPE, [4], source="CPU", eta_noise_seed_delta=31337)
    assert torch.equal(shifted.next()[0], _randn(4)[0])
    assert torch.equal(shifted.next()[0], _randn(4 + 31337)[0])


@pytest.mark.parametrize("source", ["CPU", "GPU", "NV"])
def test_sources_are_repeatable(source):
    a = rng.ImageRNG(SHAPE, [9, 10], source=source)
    b = rng.ImageRNG(SHAPE, [9, 10], source=source)
    for _ in range(3):
        assert torch.equal(a.next(), b.next())
