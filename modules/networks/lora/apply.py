"""Applying LoRAs to a pipeline for one job (merged into the weights, one at a time, the originals kept and copied
back after), and the cache of their files."""
from __future__ import annotations

import itertools
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from modules.diffusion import stop_points
from modules.models import files
from modules.models.families import Family
from modules.models.files import ModelFileError
from modules.networks.lora.files import LoraInfo, one_per_file
from modules.networks.lora.layers import _UNSAFE_KEY, Match, _split_key, match, refusal, unsupported_type

log = logging.getLogger(__name__)


class LoraCache:
    """Recently used LoRA state dicts in RAM (CPU), keyed by path + mtime + size; least recently used goes first."""

    def __init__(self, max_items: int = 16, max_bytes: int | None = 4 << 30):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: Path) -> tuple:
        stat = Path(path).stat()
        return (str(path), stat.st_mtime_ns, stat.st_size)

    def get(self, path: Path) -> dict[str, torch.Tensor]:
        """The file's tensors (do not modify them: they are shared with later jobs)."""
        key = self._key(path)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        state_dict = files.load_state_dict(path)
        with self._lock:
            for old in [k for k in self._items if k[0] == key[0]]:   # an older version of the same file
                del self._items[old]
            self._items[key] = state_dict
            self._evict()
        return state_dict

    def _evict(self) -> None:
        def size(sd):
            return sum(t.numel() * t.element_size() for t in sd.values())
        while len(self._items) > max(self.max_items, 0):
            self._items.popitem(last=False)
        if self.max_bytes is not None:
            while len(self._items) > 1 and sum(size(sd) for sd in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class AppliedLoras(list):
    """The warnings of an `applied` block (a list of str); `.loras` are the LoRAs in effect, for infotext."""

    def __init__(self):
        super().__init__()
        self.loras: list[LoraInfo] = []


_adapter_numbers = itertools.count()


@contextmanager
def _quiet_loading():
    """diffusers/transformers report every LoRA load at warning level (and a progress bar); we report ourselves."""
    names = ("diffusers.loaders", "diffusers.utils.peft_utils", "transformers.integrations.peft", "peft")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as transformers_logging
        bar = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
    except ImportError:   # pragma: no cover - transformers is a dependency
        transformers_logging, bar = None, False
    try:
        with warnings.catch_warnings():
            # peft's note that a second adapter joins the first: that is what we do on purpose
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if bar and transformers_logging is not None:
            transformers_logging.enable_progress_bar()


def _injected_layers(pipeline, adapter: str) -> dict[str, int]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    counts = {}
    for component in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipeline, component, None)
        if model is None:
            continue
        counts[component] = sum(1 for module in model.modules()
                                if isinstance(module, BaseTunerLayer) and adapter in getattr(module, "lora_A", {}))
    return counts


def _for_diffusers(state_dict: dict, found: Match) -> dict[str, torch.Tensor]:
    """Only the matched layers, each under the kohya name diffusers' converter maps to that very layer."""
    out = {}
    for key, value in state_dict.items():
        split = _split_key(key)
        if split is None or split[0] not in found.matched:
            continue
        module, part = split
        canonical = found.matched[module].canonical
        suffix = {"down": "lora_down.weight", "up": "lora_up.weight", "alpha": "alpha"}.get(part, part)
        out[f"{canonical}.{suffix}"] = value
    return out


def _remove(pipeline, adapters: list[str]) -> None:
    """Delete our adapters; when none is left, unwrap peft's layers so the module tree is the original one.

    (`delete_adapters` alone leaves every targeted layer wrapped in a peft layer; `unload_lora_weights` puts the
    original modules back, but removes all adapters, so it runs only once no one else's adapter remains.)
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    try:
        present = {name for names in pipeline.get_list_adapters().values() for name in names}
        ours = [name for name in adapters if name in present]
        if ours:
            pipeline.delete_adapters(ours)
        for component in ("unet", "text_encoder", "text_encoder_2"):   # a load that failed half-way
            model = getattr(pipeline, component, None)
            for module in model.modules() if model is not None else ():
                if isinstance(module, BaseTunerLayer):
                    for name in adapters:
                        if name in getattr(module, "lora_A", {}):
                            module.delete_adapter(name)
    finally:
        if not any(pipeline.get_list_adapters().values()):
            pipeline.unload_lora_weights()


def _merge_keeping_originals(pipeline, adapter: str, originals: dict[int, tuple[torch.nn.Module, torch.Tensor]]
                             ) -> None:
    """Merge one adapter into the weights it changes, so sampling costs no more than without LoRAs; each changed
    weight's original is kept in `originals` (the first time only) to be copied back after the job.

    peft's own unmerge subtracts the delta again, which is off by rounding; copying the originals back leaves the
    model bit-for-bit the same after the job, as A1111's weight backup does.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for component in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipeline, component, None)
        for module in model.modules() if model is not None else ():
            if isinstance(module, BaseTunerLayer) and adapter in getattr(module, "lora_A", {}):
                base = module.get_base_layer()
                if id(base) not in originals:
                    # kept in RAM, not VRAM: on a small GPU the copies would crowd out the activations
                    originals[id(base)] = (base, base.weight.detach().to("cpu", copy=True))
                module.merge(adapter_names=[adapter])


def _restore_originals(originals: dict[int, tuple[torch.nn.Module, torch.Tensor]]) -> None:
    with torch.no_grad():
        for base, weight in originals.values():
            base.weight.copy_(weight)


@contextmanager
def applied(pipeline, family: Family, requests: list[tuple[LoraInfo, float, float]],
            cache: LoraCache, should_stop: Callable[[], bool] | None = None) -> Iterator[AppliedLoras]:
    """Inject the requested LoRAs into the pipeline for the duration of the block; always remove them after.

    Yields the warnings (an `AppliedLoras`, a list of str, whose `.loras` are the LoRAs in effect). A LoRA that
    cannot be read, is of a type diffusers cannot load, or does not fit the model is not applied and gets a
    warning naming it and the reason; the others are still applied. Weights 0/0 apply nothing (and cost nothing).
    """
    result = AppliedLoras()
    originals: dict[int, tuple[torch.nn.Module, torch.Tensor]] = {}
    try:
        for info, te_weight, unet_weight in one_per_file(requests):
            if should_stop is not None:   # between LoRAs: the job was interrupted (stop_points.Interrupted)
                stop_points.check(should_stop)
            label = info.mentioned_name or info.name
            try:
                state_dict = cache.get(info.path)
            except (ModelFileError, OSError) as error:
                result.append(f"LoRA {label}: cannot be read: {error}")
                continue
            bad = next((key for key in state_dict if not isinstance(key, str) or _UNSAFE_KEY.search(key)), None)
            if bad is not None:
                result.append(f"LoRA {label}: refused: the file has a key that no LoRA has ({str(bad)[:80]!r})")
                continue
            kind = unsupported_type(state_dict)
            if kind is not None:
                result.append(f"LoRA {label}: {kind} networks are not supported (diffusers cannot load them); "
                              "not applied")
                continue
            found = match(state_dict, pipeline, family)
            reason = refusal(found, state_dict, family, info.metadata)
            if reason is not None:
                result.append(f"LoRA {label}: {reason}; not applied")
                continue
            if found.missing:
                result.append(f"LoRA {label}: {len(found.missing)} of {found.total} layers have no counterpart in "
                              f"this checkpoint and were skipped (e.g. {found.missing[0]})")
            if found.unknown_keys:
                result.append(f"LoRA {label}: {len(found.unknown_keys)} keys of no known LoRA layout were ignored "
                              f"(e.g. {found.unknown_keys[0][:80]})")
            if any(key.endswith(".dora_scale") for key in state_dict):
                result.append(f"LoRA {label}: DoRA magnitudes (dora_scale) are not supported; applied as a plain "
                              "LoRA, so it will look different from A1111")
            if te_weight == 0 and unet_weight == 0:
                result.loras.append(info)
                continue
            adapter = f"lora_{next(_adapter_numbers)}"
            try:
                with _quiet_loading():
                    pipeline.load_lora_weights(_for_diffusers(state_dict, found), adapter_name=adapter)
            except Exception as error:   # a LoRA that fails to load must not fail the job
                log.debug("LoRA %s (%s) failed to load", label, info.path, exc_info=True)
                _remove(pipeline, [adapter])
                message = " ".join(str(error).split()) or type(error).__name__
                result.append(f"LoRA {label}: could not be applied: {message[:300]}")
                continue
            try:
                counts = _injected_layers(pipeline, adapter)
                if sum(counts.values()) < len(found.matched):
                    result.append(f"LoRA {label}: only {sum(counts.values())} of {len(found.matched)} layers could "
                                  "be applied")
                weights = {component: (unet_weight if component == "unet" else te_weight)
                           for component, count in counts.items() if count}
                pipeline.set_adapters([adapter], adapter_weights=[weights])
                # Merged and taken off at once: the next LoRA loads into a model without adapters, so n LoRAs cost
                # n times one (peft's loading slows with every adapter present). The weights come out as if all
                # were merged together: peft merges several adapters one after another, in this same order.
                _merge_keeping_originals(pipeline, adapter, originals)
            finally:
                _remove(pipeline, [adapter])
            result.loras.append(info)
        yield result
    finally:
        _restore_originals(originals)
