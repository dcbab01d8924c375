"""Hypernetworks on a pipeline for one job.

A module computes `x + linear(x) * multiplier`. In A1111 every attention layer (its hijacked `CrossAttention`)
runs `context = default(context, x)` and then, for each loaded hypernetwork whose file has a module for
`context.shape[-1]`, `context_k = module_k(context_k)`, `context_v = module_v(context_v)`; keys and values are
`to_k(context_k)`, `to_v(context_v)`; queries are untouched. So a 768 module changes SD 1.x's cross-attention
(its text context is 768 wide) and the 320 / 640 / 1280 modules that A1111's "Create hypernetwork" adds by
default change the self-attention layers of those widths. Here that is done by an attention processor
(`HypernetworkAttnProcessor`) set on the fitting `Attention` layers of the UNet (and of a ControlNet, which A1111
also reaches) for the job only, and the original processor objects are put back afterwards.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from modules.diffusion import stop_points
from modules.diffusion.attention_processor import AttentionProcessor
from modules.models.files import ModelFileError
from modules.networks.hypernetwork.files import HypernetworkInfo
from modules.networks.hypernetwork.loading import HypernetworkCache, HypernetworkModule

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the attention processor

def _standard_processors() -> tuple[type, ...]:
    """Processors that compute plain scaled-dot-product attention from to_q/to_k/to_v, which ours replaces
    faithfully (diffusers' default AttnProcessor2_0, and what --xformers / attention slicing install)."""
    from diffusers.models import attention_processor as ap
    names = ("AttnProcessor2_0", "AttnProcessor", "XFormersAttnProcessor", "SlicedAttnProcessor")
    return tuple(getattr(ap, name) for name in names if hasattr(ap, name))


class HypernetworkAttnProcessor(AttentionProcessor):
    """diffusers' `AttnProcessor2_0` with A1111's hypernetwork step: the context that feeds the keys and the one
    that feeds the values each pass through the hypernetwork modules of their width, in order, before to_k / to_v.

    `original` is the processor it stands in for, put back by `applied` after the job.
    """

    def __init__(self, original, modules: list[tuple[HypernetworkModule, HypernetworkModule, float]],
                 placed: dict | None = None):
        self.original = original
        self.modules = modules
        self._placed = {} if placed is None else placed   # (module id, device) → copy; shared by one job's layers

    def _on(self, module: HypernetworkModule, device: torch.device) -> HypernetworkModule:
        """The module on the device the attention runs on (found at call time, so offloaded models work too);
        the cached original stays on the CPU and is never modified."""
        if module.linear[0].weight.device == device:
            return module
        key = (id(module), device)
        if key not in self._placed:
            self._placed[key] = copy.deepcopy(module).to(device)
        return self._placed[key]

    def contexts(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context_k = context_v = context
        for module_k, module_v, multiplier in self.modules:
            if module_k.width != context.shape[-1]:
                continue
            module_k, module_v = self._on(module_k, context.device), self._on(module_v, context.device)
            dtype = module_k.linear[0].weight.dtype   # computed in the modules' fp32, as A1111's upcast path
            context_k = module_k(context_k.to(dtype), multiplier).to(context.dtype)
            context_v = module_v(context_v.to(dtype), multiplier).to(context.dtype)
        return context_k, context_v


# --------------------------------------------------------------------------- applying for one job

@dataclass
class _Layer:
    name: str
    attn: torch.nn.Module
    width: int            # the width of the context its keys and values are computed from
    cross: bool


def attention_layers(pipeline) -> list[_Layer]:
    """Every diffusers `Attention` layer of the UNet (and ControlNet, if any), with its context width:
    the text-context width for cross-attention, the layer's own width for self-attention."""
    from diffusers.models.attention_processor import Attention

    found = []
    for component in ("unet", "controlnet"):
        model = getattr(pipeline, component, None)
        if not isinstance(model, torch.nn.Module):
            continue
        for name, module in model.named_modules():
            if isinstance(module, Attention):
                cross = bool(module.is_cross_attention)
                width = module.cross_attention_dim if cross else module.query_dim
                found.append(_Layer(f"{component}.{name}", module, int(width), cross))
    return found


class AppliedHypernetworks(list):
    """The warnings of an `applied` block (a list of str); `.hypernetworks` are those in effect, for infotext."""

    def __init__(self):
        super().__init__()
        self.hypernetworks: list[tuple[HypernetworkInfo, float]] = []


@contextmanager
def applied(pipeline, requests: list[tuple[HypernetworkInfo, float]], cache: HypernetworkCache,
            should_stop: Callable[[], bool] | None = None) -> Iterator[AppliedHypernetworks]:
    """Apply the requested hypernetworks, in order, to the pipeline's attention layers for the duration of the
    block; the original attention processor objects are always put back afterwards.

    Yields the warnings (an `AppliedHypernetworks`, a list of str). A hypernetwork that cannot be read, or that
    has no module for any context width of this checkpoint, is not applied and gets a warning naming it; one
    that fits only the self-attention layers (no module for the text-context width) is applied there, as A1111
    does, with a warning. A multiplier of 0 applies nothing (A1111's result is then identical) and costs nothing.
    """
    result = AppliedHypernetworks()
    installed: list[tuple[torch.nn.Module, object]] = []
    try:
        layers = attention_layers(pipeline)
        all_widths = {layer.width for layer in layers}
        text_widths = {layer.width for layer in layers if layer.cross}
        per_width: dict[int, list[tuple[HypernetworkModule, HypernetworkModule, float]]] = {}
        for info, multiplier in requests:
            if should_stop is not None:   # between hypernetworks: the job was interrupted (stop_points.Interrupted)
                stop_points.check(should_stop)
            try:
                network = cache.get(info.path)
            except (ModelFileError, OSError) as error:
                result.append(f"Hypernetwork {info.name}: cannot be read: {error}")
                continue
            fitting = sorted(set(network.layers) & all_widths)
            if not fitting:
                result.append(f"Hypernetwork {info.name}: has modules for context widths {network.widths}, but this "
                              f"checkpoint's attention layers use {sorted(all_widths)} (text context "
                              f"{'/'.join(map(str, sorted(text_widths))) or 'none'}); not applied")
                continue
            if text_widths and not text_widths & set(fitting):
                result.append(f"Hypernetwork {info.name}: has no module for this checkpoint's text-context width "
                              f"{'/'.join(map(str, sorted(text_widths)))} (it has {network.widths}); applied to the "
                              f"self-attention layers of width {'/'.join(map(str, fitting))} only")
            result.hypernetworks.append((info, multiplier))
            if multiplier == 0:
                continue
            for width in fitting:
                module_k, module_v = network.layers[width]
                per_width.setdefault(width, []).append((module_k, module_v, float(multiplier)))

        placed: dict = {}   # device copies, made once for the job and shared by all its layers
        standard = _standard_processors()
        unsupported: dict[str, int] = {}
        for layer in layers:
            modules = per_width.get(layer.width)
            if not modules:
                continue
            current = layer.attn.processor
            base, before = current, []
            if isinstance(current, HypernetworkAttnProcessor):   # nested blocks: keep the outer ones, then ours
                base, before = current.original, list(current.modules)
            if not isinstance(base, standard):
                unsupported[type(base).__name__] = unsupported.get(type(base).__name__, 0) + 1
                continue
            processor = HypernetworkAttnProcessor(base, before + modules, placed)
            installed.append((layer.attn, current))
            layer.attn.set_processor(processor)
        for name, count in unsupported.items():
            result.append(f"Hypernetworks: {count} attention layers use the attention processor {name}, which "
                          "cannot take hypernetworks; they were left without them")
        for warning in result:
            log.warning("%s", warning)
        yield result
    finally:
        for attn, original in reversed(installed):
            attn.set_processor(original)
