"""Stop points inside model calls: an interrupt lands at the next block, or between slices of a long attention,
and nothing of the mechanism stays on the model or changes an image at usual sizes."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from modules.diffusion import attention_processor, sampling, stop_points
from tests.fixtures.pipelines import build_pipeline
from tests.fixtures.tiny_checkpoints import build_tiny_model


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline(build_tiny_model("sd1"))


def unet_output(pipe, size: int) -> torch.Tensor:
    sample = torch.randn(2, 4, size, size, generator=torch.Generator().manual_seed(1))
    context = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        return pipe.unet(sample, 10, context).sample


def test_at_usual_sizes_the_stop_points_change_nothing(pipe):
    before = unet_output(pipe, 16)
    with stop_points.inside([pipe.unet], lambda: False, slice_attention=True):
        during = unet_output(pipe, 16)
    assert torch.equal(before, during)


def test_sliced_attention_gives_the_same_result(pipe, monkeypatch):
    before = unet_output(pipe, 32)
    monkeypatch.setattr(attention_processor, "SCORES_PER_SLICE", 2 ** 12)   # slices of a few queries
    with stop_points.inside([pipe.unet], lambda: False, slice_attention=True):
        sliced = unet_output(pipe, 32)
    assert torch.allclose(before, sliced, atol=1e-5)


def test_the_hooks_and_processors_come_off_even_after_a_stop(pipe):
    processors = {name: type(module.processor) for name, module in pipe.unet.named_modules()
                  if hasattr(module, "processor")}
    calls = []

    def stop_on_third_check():
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(stop_points.Interrupted), stop_points.inside([pipe.unet], stop_on_third_check,
                                                                    slice_attention=True):
        unet_output(pipe, 8)
    assert len(calls) == 3     # stopped at the third block, not at the end of the call
    assert all(not module._forward_pre_hooks for module in pipe.unet.modules())
    assert {name: type(module.processor) for name, module in pipe.unet.named_modules()
            if hasattr(module, "processor")} == processors


def test_a_long_attention_stops_between_slices(pipe, monkeypatch):
    monkeypatch.setattr(attention_processor, "SCORES_PER_SLICE", 2 ** 12)
    attention = next(module for module in pipe.unet.modules() if type(module).__name__ == "Attention")
    checks = []
    processor = attention_processor.AttentionProcessor()
    processor.check = lambda: stop_points.check(lambda: checks.append(1) or len(checks) > 2)
    hidden = torch.randn(1, 1024, attention.to_q.in_features)
    with pytest.raises(stop_points.Interrupted), torch.inference_mode():
        processor(attention, hidden)
    assert len(checks) == 3


def test_the_attention_processor_is_diffusers_own_at_usual_sizes(pipe):
    """Without a check it is one scaled_dot_product_attention call, as AttnProcessor2_0: the same numbers."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    attention = next(module for module in pipe.unet.modules() if type(module).__name__ == "Attention")
    hidden = torch.randn(2, 64, attention.to_q.in_features, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(attention_processor.AttentionProcessor()(attention, hidden),
                           AttnProcessor2_0()(attention, hidden))


def test_a_vae_decode_stops_at_its_next_block(pipe):
    latents = torch.randn(1, 4, 64, 64)
    started = time.perf_counter()
    with pytest.raises(stop_points.Interrupted):
        sampling.decode(pipe, latents, nan_check=False, should_stop=lambda: True)
    assert time.perf_counter() - started < 1
    images = sampling.decode(pipe, latents[:, :, :8, :8], nan_check=False, should_stop=lambda: False)
    assert images[0].size == (64, 64)
    assert np.asarray(images[0]).std() > 0


def test_a_hypernetworks_attention_is_sliced_and_checked_too(pipe):
    from modules.networks.hypernetwork import HypernetworkAttnProcessor

    attention = next(module for module in pipe.unet.modules() if type(module).__name__ == "Attention")
    original = attention.processor
    attention.processor = HypernetworkAttnProcessor(original, [])
    try:
        with stop_points.inside([pipe.unet], lambda: False, slice_attention=True):
            assert isinstance(attention.processor, HypernetworkAttnProcessor) and attention.processor.check is not None
        assert isinstance(attention.processor, HypernetworkAttnProcessor) and attention.processor.check is None
    finally:
        attention.processor = original
