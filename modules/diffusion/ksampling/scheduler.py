"""Running one of A1111's samplers inside a diffusers pipeline's denoising loop.

diffusers' pipelines loop `for t in scheduler.timesteps`: scale the latents (`scale_model_input`), run the UNet
(with classifier-free guidance and whatever features patch it), then `scheduler.step`. A1111's samplers are
functions that call the model themselves, sometimes twice a step, sometimes a number of times only known as they
go (DPM adaptive). `KSamplerScheduler` turns one into the other: the sampler runs as a generator that yields each
model call it needs (latents and noise level); every loop iteration answers one call, and `step` returns the
latents of the next call. `timesteps` grows by one entry per call still to come, so the pipeline's loop runs
exactly as many UNet calls as A1111 makes.

The latents the UNet sees are always the sampler's own (float32), whatever the pipeline holds, so nothing the
pipeline does between steps changes the sampling. What A1111 does between the UNet and the sampler is done here:
the inpainting blend of the prediction (`blend`; of the model's input for the timestep samplers, `blend_input`)
and the extensions' after-CFG callback (`after_cfg`).
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from modules.diffusion.ksampling.algorithms import Sampling


class CallTimesteps(list):
    """The loop's timesteps: a list (so entries appended during the loop extend it) whose slices are tensors,
    as diffusers' pipelines expect (`timesteps[:1].repeat(...)`)."""

    def __getitem__(self, key):
        if isinstance(key, slice):
            return torch.stack(list.__getitem__(self, key))
        return list.__getitem__(self, key)


class KSamplerScheduler(SchedulerMixin, ConfigMixin):
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000):
        self.init_noise_sigma = 1.0   # the latents handed to the pipeline are already at the first call's level
        self.timesteps = CallTimesteps()
        self.num_inference_steps = 0
        self.calls_done = 0
        self.result: torch.Tensor | None = None
        self._sampling: Sampling | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._denoiser = None
        self.blend: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self.blend_input: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.after_cfg: Callable[[torch.Tensor], torch.Tensor] | None = None

    def begin(self, sampling: Sampling, denoiser) -> None:
        """Start `sampling` (a sampler generator over the starting latents); `denoiser` turns the UNet's call and
        answer into the sampler's terms (schedules.Denoiser or timestep_algorithms.TimestepDenoiser)."""
        self._sampling, self._denoiser = sampling, denoiser
        self.timesteps = CallTimesteps()
        self.calls_done = 0
        self.result = None
        self._advance(None)

    @property
    def prediction_type(self) -> str | None:
        """What the model's UNet predicts, as the sampler reads its output ("epsilon" or "v_prediction")."""
        return getattr(self._denoiser, "prediction", None)

    @property
    def started(self) -> bool:
        return self._sampling is not None

    @property
    def finished(self) -> bool:
        return self.result is not None

    def restart_timesteps(self) -> None:
        """A refiner's pipeline takes over: its loop starts at the pending call."""
        self.timesteps = CallTimesteps(self.timesteps[-1:] if self._pending is not None else [])

    def current_latents(self) -> torch.Tensor:
        """The latents of the next model call (the final latents once finished)."""
        return self.result if self._pending is None else self._pending[0]

    def _advance(self, answer) -> None:
        try:
            self._pending = self._sampling.send(answer)
        except StopIteration as done:
            self._pending, self.result = None, done.value
            return
        x, level = self._pending
        self.timesteps.append(self._denoiser.model_input(x, level)[1])

    # -- the diffusers scheduler interface the pipelines use

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, **_):
        if not self.started:
            raise RuntimeError("KSamplerScheduler.begin() must run before the pipeline")
        self.num_inference_steps = len(self.timesteps)

    def _model_latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, level = self._pending
        return (self.blend_input(x) if self.blend_input is not None else x), level

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The UNet input for the pending call, as many times as the pipeline batches it (CFG doubles it)."""
        x, level = self._model_latents()
        scaled = self._denoiser.model_input(x, level)[0]
        return scaled.repeat(sample.shape[0] // scaled.shape[0], 1, 1, 1).to(sample.device, sample.dtype)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True, **_):
        x, level = self._model_latents()
        answer = self._denoiser.answer(model_output.to(x.device), x, level)
        if self.blend is not None:
            answer = self.blend(answer, level)
        if self.after_cfg is not None:
            answer = self.after_cfg(answer)
        self.calls_done += 1
        self._advance(answer)
        latents = self.current_latents().to(sample.device, sample.dtype)
        return SchedulerOutput(prev_sample=latents) if return_dict else (latents,)

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """diffusers' inpaint loop noises the kept area with this; the pipeline is given no mask for 4-channel
        models (the blend happens here), so this only needs to be harmless."""
        return original

