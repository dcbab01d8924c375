"""Composable diffusion (`A AND B :0.7`): several prompts, each weighted, in one sampling run.

A1111 combines the predictions as `uncond + cfg · Σ wᵢ (condᵢ − uncond)`. diffusers' pipelines only know one
prompt, so for such a job the UNet call is wrapped: the pipeline still asks for [uncond, cond] (its CFG batch),
and the wrapper answers the cond half with `uncond + Σ wᵢ (condᵢ − uncond)`; the pipeline's own CFG step then
gives exactly A1111's result. The wrapper is set on the UNet instance for the job and removed after it.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from modules.prompts.conditioning import Conditioning
from modules.diffusion.unet_forward import replaced_forward


def _predict(forward, sample, timestep, cond: Conditioning, dtype, args, kwargs, added_cond_kwargs):
    """One UNet prediction for `sample` under one prompt's conditioning."""
    batch = sample.shape[0]
    extra = dict(kwargs, return_dict=False)
    if added_cond_kwargs is not None:   # SDXL: the pooled text embedding travels beside the sequence
        text_embeds = added_cond_kwargs["text_embeds"]
        extra["added_cond_kwargs"] = dict(added_cond_kwargs,
                                          text_embeds=cond.batch_pooled(batch).to(text_embeds.device,
                                                                                      text_embeds.dtype),
                                          time_ids=added_cond_kwargs["time_ids"][:batch])
    embeds = cond.batch_embeds(batch).to(sample.device, dtype)
    return forward(sample, timestep, embeds, *args, **extra)[0]


def _weighted(weight, prediction: torch.Tensor) -> torch.Tensor:
    """A part's weight (a float, or one per image when a batch's prompts differ) times its prediction."""
    if torch.is_tensor(weight):
        weight = weight.to(prediction.device, prediction.dtype)
    return weight * prediction


@contextlib.contextmanager
def composable_unet(unet, conditioning_now: Callable[[], tuple[list[tuple[float, Conditioning]], Conditioning]],
                    guided: bool):
    """For the duration of the block, `unet(...)` answers with A1111's weighted combination of the AND parts.

    `conditioning_now()` gives the current step's ([(weight, cond)...], uncond); `guided` is whether the
    pipeline runs classifier-free guidance (its batch is then [uncond, cond]).
    """
    original = unet.forward

    def forward(sample, timestep, encoder_hidden_states, *args, added_cond_kwargs=None, return_dict=True, **kwargs):
        parts, uncond = conditioning_now()
        dtype = encoder_hidden_states.dtype

        def predict(x, t, cond):
            return _predict(original, x, t, cond, dtype, args, kwargs, added_cond_kwargs)

        if guided:
            half = sample.shape[0] // 2
            t = timestep[:half] if torch.is_tensor(timestep) and timestep.dim() > 0 else timestep
            base = predict(sample[:half], t, uncond)
            combined = base.clone()
            for weight, cond in parts:
                combined += _weighted(weight, predict(sample[half:], t, cond) - base)
            out = torch.cat([base, combined])
        else:
            out = sum(_weighted(weight, predict(sample, timestep, cond)) for weight, cond in parts)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)

    with replaced_forward(unet, forward):
        yield
