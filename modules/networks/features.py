"""The job's networks as loop features (diffusion/features.py's protocol): the prompt's LoRAs and
hypernetworks and the external VAE are put on the pipeline for one job and taken off after it, even on errors.
`Generator.generate` enters them in this order: LoRAs, hypernetworks, VAE."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

from modules.diffusion.features import LoopFeature
from modules.models.families import Family
from modules.networks import hypernetwork, lora
from modules.networks.vae import swapped_vae


@dataclass
class Loras(LoopFeature):
    """The prompt's <lora:…> tags, merged into the text encoders and the denoiser."""

    requested: list                    # (LoraInfo, text-encoder weight, denoiser weight)
    family: Family
    cache: lora.LoraCache
    should_stop: Callable[[], bool]    # interrupt between LoRAs (stop_points.Interrupted)
    warnings: list[str] = field(default_factory=list)   # set on entering: the LoRAs not applied, and why
    used: list = field(default_factory=list)            # set on entering: the LoRAs in effect, for the infotext

    @contextlib.contextmanager
    def patch(self, pipe):
        with lora.applied(pipe, self.family, self.requested, self.cache, should_stop=self.should_stop) as applied:
            self.warnings, self.used = list(applied), applied.loras
            yield


@dataclass
class Hypernetworks(LoopFeature):
    """The prompt's <hypernet:…> tags, on the attention layers."""

    requested: list                    # (HypernetworkInfo, multiplier)
    cache: hypernetwork.HypernetworkCache
    should_stop: Callable[[], bool]
    warnings: list[str] = field(default_factory=list)   # set on entering

    @contextlib.contextmanager
    def patch(self, pipe):
        with hypernetwork.applied(pipe, self.requested, self.cache, should_stop=self.should_stop) as applied:
            self.warnings = list(applied)
            yield


@dataclass
class ExternalVae(LoopFeature):
    """A VAE file used instead of the checkpoint's own (None: the checkpoint's)."""

    vae: object | None

    def patch(self, pipe):
        return swapped_vae(pipe, self.vae)
