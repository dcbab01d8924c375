"""Where a loaded pipeline's weights are while it works, and the per-model speed/memory switches.

Memory modes (A1111's flags, diffusers' offloading; `DeviceConfig.memory_for`):
- full: the whole pipeline on the GPU (the fast default).
- medvram: diffusers' model CPU offload. The weights live in RAM; the text encoders, the UNet and the VAE take
  turns on the GPU, each moved in whole when it runs.
- lowvram: diffusers' sequential offload. Each layer's weights move in for its own forward only, so the GPU holds
  one layer and the activations; the VAE decodes in tiles.

The offload hooks are put on for one job (`job`), after the job's LoRAs, hypernetworks and VAE are in place, and
taken off before those are removed: sequential offload keeps the weights as meta tensors beside a map of the real
ones, so whatever changes weights (LoRA merging, a VAE swap) must run with the hooks off. Putting them on and off
costs tens of milliseconds for SDXL, against jobs that take seconds in these modes.

`configure` applies, at the start of each job, the options that change how a model computes without moving its
weights (attention slicing, VAE tiling and slicing); it does nothing when they are unchanged.
"""
from __future__ import annotations

import contextlib
import logging
import weakref

import torch

from modules.devices import FULL, LOWVRAM, MEDVRAM, DeviceConfig
from modules.options import Options

log = logging.getLogger(__name__)


class Placement:
    def __init__(self, devices: DeviceConfig, options: Options):
        self.devices = devices
        self.options = options
        self._hooked: weakref.WeakSet = weakref.WeakSet()   # pipelines whose offload hooks are on (in a job)
        self._sliced: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # pipeline → attention slicing

    def mode(self, model) -> str:
        return self.devices.memory_for(model.family)

    def prepare(self, pipeline) -> None:
        """Once, after loading: the memory format (channels-last, --opt-channelslast)."""
        if self.devices.channels_last:
            pipeline.unet.to(memory_format=torch.channels_last)

    def to_device(self, model) -> None:
        """Make the model ready to run: on the GPU in full mode; in RAM, for the job's hooks, when offloading."""
        if self.mode(model) == FULL:
            model.pipeline.to(self.devices.device)
        elif model.pipeline not in self._hooked:
            model.pipeline.to("cpu")

    def configure(self, model) -> None:
        """The options that change how the model computes, not where its weights are (before LoRAs and
        hypernetworks are applied: a hypernetwork wraps whichever attention processor is in place)."""
        pipeline = model.pipeline
        sliced = bool(self.options.attention_slicing) or self.devices.attention_slicing
        if self._sliced.get(pipeline, False) != sliced:
            if sliced:
                pipeline.enable_attention_slicing()
            elif self.devices.attention == "xformers":
                pipeline.enable_xformers_memory_efficient_attention()
            else:
                pipeline.disable_attention_slicing()   # back to diffusers' default processor: PyTorch SDPA
            self._sliced[pipeline] = sliced
        vae = pipeline.vae
        if bool(self.options.vae_tiling) or self.mode(model) == LOWVRAM:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        if self.options.vae_slicing:
            vae.enable_slicing()
        else:
            vae.disable_slicing()

    @contextlib.contextmanager
    def job(self, *models):
        """The offload hooks of medvram/lowvram on for the block; afterwards every weight is back in RAM.
        Re-entrant: a nested job (a script's generation inside a job) leaves the outer job's hooks alone."""
        hooked = []
        try:
            for model in models:
                pipeline, mode = model.pipeline, self.mode(model)
                if mode == FULL or pipeline in self._hooked:
                    continue
                if mode == MEDVRAM:
                    pipeline.enable_model_cpu_offload(device=self.devices.device)
                else:
                    _sequential_offload(pipeline, self.devices.device)
                self._hooked.add(pipeline)
                hooked.append(pipeline)
            yield
        finally:
            for pipeline in hooked:
                pipeline.remove_all_hooks()   # sequential offload's meta weights become real (RAM) ones again
                pipeline.to("cpu")            # the part that ran last (usually the VAE) leaves the GPU
                self._hooked.discard(pipeline)

    def release(self, model) -> None:
        """Between two models in one job (base, then refiner): in medvram, the first one's part still on the GPU
        goes back to RAM so the two never share it."""
        if self.mode(model) == MEDVRAM and model.pipeline in self._hooked:
            model.pipeline.maybe_free_model_hooks()


def _sequential_offload(pipeline, device: torch.device) -> None:
    """diffusers' `enable_sequential_cpu_offload`, on `device` exactly as given: diffusers always adds an index
    ("cpu:0"), which on the CPU (the test suite's stand-in for a GPU) makes accelerate's re-created parameters come
    back as plain tensors. Same accelerate hooks, same buffers rule."""
    from accelerate import cpu_offload

    pipeline.remove_all_hooks()
    pipeline.to("cpu")
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            cpu_offload(component, device, offload_buffers=len(component._parameters) > 0)
