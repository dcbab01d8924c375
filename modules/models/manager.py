"""Which checkpoints are loaded: the RAM LRU, the model on the device, and switching between them.

One object owns every loaded model. Only the job worker calls `get`, so loading and generation never
race; a failed load raises and leaves the previous model loaded and current.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

from modules.devices import DeviceConfig
from modules.models import detect, files
from modules.models.placement import Placement
from modules.models.registry import CheckpointInfo, CheckpointRegistry
from modules.options import Options

log = logging.getLogger(__name__)


class CheckpointNotFound(LookupError):
    """No checkpoint matches the name; the message lists how to find valid ones."""


class CheckpointLoadError(Exception):
    """The checkpoint exists but cannot be loaded; the message names the file and the reason."""


@dataclass
class LoadedModel:
    info: CheckpointInfo
    spec: detect.ModelSpec
    pipeline: object
    scheduler_config: dict
    load_seconds: float
    alphas_cumprod: torch.Tensor | None = None   # torch.Tensor: the training schedule the samplers' noise levels come from

    @property
    def family(self) -> str:
        return self.spec.family


class ModelManager:
    def __init__(self, registry: CheckpointRegistry, devices: DeviceConfig, options: Options):
        self.registry = registry
        self.devices = devices
        self.options = options
        self.placement = Placement(devices, options)
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()   # key: checkpoint name; last = most recent
        self._current: LoadedModel | None = None
        self._chosen: CheckpointInfo | None = None   # the checkpoint chosen in the UI or by options, not per request
        self._failed: set[str] = set()   # checkpoints whose last load failed: not picked as the default
        self._lock = threading.RLock()
        self.on_loaded: Callable[[LoadedModel], None] | None = None   # called with each newly loaded model

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def resolve(self, name: str | None) -> CheckpointInfo:
        """The checkpoint for a title/name/hash, or the default one when name is empty."""
        if name:
            info = self.registry.find(name)
            if info is None:
                raise CheckpointNotFound(f"unknown checkpoint {name!r}; see /sdapi/v1/sd-models for valid titles")
            return info
        chosen = self.registry.find(self._chosen.title) if self._chosen is not None else None
        if chosen is not None:   # the user's choice, even after a request used another checkpoint
            return chosen
        if self._current is not None:
            return self._current.info
        for candidate in (self.options.sd_model_checkpoint,):
            info = self.registry.find(candidate)
            if info is not None:
                return info
        items = self.registry.items()
        if not items:
            raise CheckpointNotFound(
                f"no checkpoint found: put a .safetensors or .ckpt file in the checkpoint folder "
                f"({self.registry.folder.name}) "
                "and press the refresh button")
        return next((info for info in items if info.name not in self._failed), items[0])

    def get(self, name: str | None = None, *, make_current: bool = True, remember: bool = True) -> LoadedModel:
        """Make the checkpoint current (loading it or taking it from the RAM cache) and return it.

        With `make_current=False` (a refiner, used beside the current model for one job) it is loaded and put
        on the device, but the current model and the remembered choice stay as they are. With
        `remember=False` (a checkpoint one request names) it becomes current, but the remembered choice
        (`sd_model_checkpoint`) stays, so the next request without one goes back to it.
        """
        info = self.resolve(name)
        with self._lock:
            model = self._loaded.get(info.name)
            if model is not None and model.info.filename != info.filename:
                model = None
            if model is None:
                try:
                    model = self._load(info)
                except CheckpointLoadError:
                    self._failed.add(info.name)
                    raise
                self._failed.discard(info.name)
                self._loaded[info.name] = model
            self._loaded.move_to_end(info.name)
            self.placement.configure(model)
            if not make_current:
                self.placement.to_device(model)
                self._evict()
            else:
                if model is not self._current:
                    self._activate(model)
                    self._evict()
                if remember:
                    self._remember(model)
            return model

    def _load(self, info: CheckpointInfo) -> LoadedModel:
        # Imported here, on the first load in the worker, so that serving the first page never waits for diffusers.
        from modules.diffusion.ksampling.scheduler import KSamplerScheduler
        from modules.models import loader

        started = time.perf_counter()
        if not info.filename.is_file():   # listed, then deleted or moved
            raise CheckpointNotFound(f"{info.filename.name} is no longer in the checkpoint folder; refresh the list")
        try:
            self.registry.ensure_hash(info)
            state_dict = files.load_state_dict(info.filename)
            override = (self.options.sd_model_prediction_overrides or {}).get(info.name)
            spec = detect.detect(state_dict, sidecar_yaml=info.sidecar_yaml, override=override)
            components = loader.build_components(state_dict, spec, self.devices.dtype,
                                                 self.devices.vae_dtype_for(spec.family))
        except OSError as error:   # vanished or unreadable while being read: its name, never the server's path
            raise CheckpointLoadError(f"cannot load {info.filename.name}: {error.strerror or 'cannot be read'}") from None
        except (files.ModelFileError, detect.UnsupportedModelError, loader.ModelLoadError) as error:
            reason = str(error)
            if not reason.startswith(info.filename.name):
                reason = f"{info.filename.name}: {reason}"
            raise CheckpointLoadError(f"cannot load {reason}") from None
        alphas = loader.alphas_cumprod(state_dict, spec)
        del state_dict
        base_scheduler = loader.scheduler_config(spec)
        pipeline = loader.build_pipeline(components, spec, KSamplerScheduler())
        pipeline.set_progress_bar_config(disable=True)
        if self.devices.attention == "xformers":
            pipeline.enable_xformers_memory_efficient_attention()   # otherwise diffusers' default: PyTorch SDPA
        self.placement.prepare(pipeline)
        elapsed = time.perf_counter() - started
        log.info("Loaded %s as %s (prediction: %s, from %s) in %.1fs", info.title, spec.label,
                 spec.prediction_type, spec.prediction_source, elapsed)
        model = LoadedModel(info=info, spec=spec, pipeline=pipeline, scheduler_config=base_scheduler,
                            load_seconds=elapsed, alphas_cumprod=alphas)
        if self.on_loaded is not None:   # extensions' on_model_loaded callbacks
            self.on_loaded(model)
        return model

    def _activate(self, model: LoadedModel) -> None:
        if self.devices.is_cuda and self.options.sd_checkpoints_keep_in_cpu:
            for other in self._loaded.values():
                if other is not model:
                    other.pipeline.to("cpu")
        self.placement.to_device(model)
        self._current = model

    def _remember(self, model: LoadedModel) -> None:
        if self._chosen is not None and self._chosen.filename == model.info.filename:
            return
        self._chosen = model.info
        try:  # remembered so the next start loads the same model, as A1111 does
            self.options.update({"sd_model_checkpoint": model.info.title,
                                 "sd_checkpoint_hash": model.info.sha256 or ""})   # A1111 keeps both
        except ValueError:
            pass  # --freeze-settings: the choice just is not persisted

    def _evict(self) -> None:
        limit = max(1, int(self.options.sd_checkpoints_limit))
        if len(self._loaded) <= limit:
            return
        for name in list(self._loaded):   # least recently used first; the current model always stays
            if len(self._loaded) <= limit:
                break
            if self._loaded[name] is self._current:
                continue
            del self._loaded[name]
            log.info("Unloaded %s from the RAM cache", name)
        self.release_memory()

    def unload_all(self) -> None:
        with self._lock:
            self._loaded.clear()
            self._current = None
            self.release_memory()

    def forget(self, name: str) -> None:
        """Drop a cached model (after its prediction override changed, say) so the next use reloads it."""
        with self._lock:
            model = self._loaded.pop(name, None)
            if model is not None and model is self._current:
                self._current = None
            self.release_memory()

    def release_memory(self) -> None:
        gc.collect()
        if self.devices.is_cuda:
            torch.cuda.empty_cache()
