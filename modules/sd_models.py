"""A1111's `modules.sd_models` for extensions, over the running server's checkpoint registry and model manager.

* `checkpoints_list` (title → CheckpointInfo) and `checkpoint_aliases` (every id → CheckpointInfo) are live views
  of the registry: a refresh (`list_models()`, the UI's 🔄) shows in them, also through a reference taken at import.
* `CheckpointInfo` has A1111's fields (`filename`, `name`, `name_for_extra`, `model_name`, `hash`, `sha256`,
  `shorthash`, `title`, `short_title`, `ids`, `metadata`, `is_safetensors`), read from the registry's entry.
* `reload_model_weights` / `load_model` switch the model through the job queue, as the UI's checkpoint dropdown
  does (from inside a job, where the queue's worker is busy with that job, directly on it);
  `unload_model_weights` frees the loaded checkpoints the same way.
* `model_data.sd_model` and `shared.sd_model` are `WebuiSdModel`: the loaded model (`pipeline`, `info`, `spec`,
  `family`) with A1111's `sd_checkpoint_info`, `sd_model_hash`, `is_sdxl`, …; A1111's LDM internals
  (`model.diffusion_model`, `cond_stage_model`, `first_stage_model`) do not exist on diffusers and raise
  `missing_name` naming the extension (the UNet is `pipeline.unet`, the VAE `pipeline.vae`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from modules.addons.missing_names import missing_name
from modules.addons.running import LiveView, services as _services

model_dir = "Stable-diffusion"


class CheckpointInfo:
    """A1111's CheckpointInfo for one file of the checkpoint folder (`CheckpointInfo(filename)` finds it)."""

    def __init__(self, filename):
        from modules.models.registry import CheckpointInfo as RegistryEntry

        entry = (filename if isinstance(filename, RegistryEntry)
                 else _services().registry.find(str(Path(filename).resolve())))
        if entry is None:
            raise ValueError(f"{filename} is not in the checkpoint folder; put it there and refresh the list")
        self._entry = entry

    filename = property(lambda self: str(self._entry.filename))
    name = property(lambda self: self._entry.name)
    model_name = property(lambda self: self._entry.model_name)
    name_for_extra = property(lambda self: self._entry.stem)
    hash = property(lambda self: self._entry.oldhash)                # A1111's legacy 8-digit "model hash"
    sha256 = property(lambda self: self._entry.sha256)
    shorthash = property(lambda self: self._entry.shorthash)
    title = property(lambda self: self._entry.title)
    is_safetensors = property(lambda self: self.filename.lower().endswith(".safetensors"))

    @property
    def short_title(self) -> str:
        return f"{self.name_for_extra} [{self.shorthash}]" if self.shorthash else self.name_for_extra

    @property
    def ids(self) -> list[str]:
        return sorted(self._entry.ids)

    @property
    def metadata(self) -> dict:
        """The safetensors file's metadata (A1111 reads it when it lists the file; here on first use)."""
        if not hasattr(self, "_metadata"):
            self._metadata = read_metadata_from_safetensors(self.filename) if self.is_safetensors else {}
            self._metadata.pop("modelspec.thumbnail", None)
        return self._metadata

    def calculate_shorthash(self) -> str | None:
        """Hash the file (cached in cache.json) and give the short hash, as A1111's."""
        _services().registry.ensure_hash(self._entry)
        return self.shorthash

    def register(self) -> None:
        """A1111 adds the entry to its lists; here the lists are the registry's, which holds it already."""

    def __eq__(self, other) -> bool:
        return isinstance(other, CheckpointInfo) and other.filename == self.filename

    def __hash__(self) -> int:
        return hash(self.filename)

    def __repr__(self) -> str:
        return f"CheckpointInfo({self.title!r})"

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        raise missing_name("modules.sd_models.CheckpointInfo", name)


def _infos() -> list[CheckpointInfo]:
    return [CheckpointInfo(entry) for entry in _services().registry.items()]


# A1111's `checkpoints_list` (title → info) and `checkpoint_aliases` (each id → info), read at each use
checkpoints_list = LiveView(lambda: {info.title: info for info in _infos()})
checkpoint_aliases = LiveView(lambda: {key: info for info in _infos() for key in info.ids})
checkpoint_alisases = checkpoint_aliases   # A1111's old misspelt name, kept there too


def list_models() -> None:
    """Rescan the checkpoint folder (the lists above follow)."""
    _services().refresh_checkpoints()


def checkpoint_tiles(use_short: bool = False) -> list[str]:
    return [info.short_title if use_short else info.title for info in _infos()]


def model_hash(filename) -> str:
    """A1111's legacy hash: 8 hex digits of sha256 over 64 KiB at 1 MiB into the file."""
    from modules.models.registry import old_hash

    return old_hash(Path(filename))


_RE_STRIP_CHECKSUM = re.compile(r"\s*\[[^]]+]\s*$")


def get_closet_checkpoint_match(search_string):
    """An id of a checkpoint, else the shortest title containing the text (with or without a "[hash]")."""
    if not search_string:
        return None
    infos = _infos()
    for info in infos:
        if search_string in info.ids:
            return info
    for text in (search_string, _RE_STRIP_CHECKSUM.sub("", search_string)):
        found = sorted((info for info in infos if text in info.title), key=lambda info: len(info.title))
        if found:
            return found[0]
    return None


def read_metadata_from_safetensors(filename) -> dict:
    """The file's metadata; values that hold JSON objects parsed, as A1111's."""
    from modules.models import files

    metadata = {}
    for key, value in files.read_metadata(Path(filename)).items():
        if value.startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        metadata[key] = value
    return metadata


def select_checkpoint() -> CheckpointInfo:
    """The checkpoint the next generation uses: the `sd_model_checkpoint` setting's, else the default one."""
    services = _services()
    entry = services.registry.find(services.options.sd_model_checkpoint) or services.models.resolve(None)
    return CheckpointInfo(entry)


class WebuiSdModel:
    """`shared.sd_model`: the loaded model with A1111's attributes; the rest of LoadedModel forwards."""

    def __init__(self, loaded):
        self._loaded = loaded

    sd_checkpoint_info = property(lambda self: CheckpointInfo(self._loaded.info))
    sd_model_checkpoint = property(lambda self: str(self._loaded.info.filename))
    sd_model_hash = property(lambda self: self._loaded.info.shorthash)
    is_sdxl = property(lambda self: self._loaded.family.xl)
    is_sd1 = property(lambda self: self._loaded.family.id == "sd1")
    is_sd2 = property(lambda self: self._loaded.family.id == "sd2")
    is_sd3 = property(lambda self: False)
    is_ssd = property(lambda self: False)

    def __eq__(self, other) -> bool:
        return isinstance(other, WebuiSdModel) and other._loaded is self._loaded

    def __hash__(self) -> int:
        return id(self._loaded)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(self._loaded, name)
        except AttributeError:
            raise missing_name("modules.shared.sd_model", name,
                               "the model is a diffusers pipeline, not A1111's LDM object: its UNet is "
                               "sd_model.pipeline.unet, its VAE sd_model.pipeline.vae, its text encoder "
                               "sd_model.pipeline.text_encoder") from None


def current_model() -> WebuiSdModel | None:
    loaded = _services().models.current
    return WebuiSdModel(loaded) if loaded is not None else None


def _run_on_worker(submit, direct):
    """Run a model change after the queued jobs, or at once when called from inside a job (the worker)."""
    services = _services()
    if services.queue.on_worker():
        return direct(services)
    job = submit(services)
    job.done.wait()
    if job.state != "done":
        raise RuntimeError(f"model change failed: {job.error}")
    return job.result


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    """Make `info` (a CheckpointInfo, a title or None for `select_checkpoint()`) the loaded model and return it."""
    title = info if isinstance(info, str) else (info or select_checkpoint()).title
    _run_on_worker(lambda services: services.submit_model_switch(title),
                   lambda services: services.generator.load(title, warm=True))
    return current_model()


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    return reload_model_weights(info=checkpoint_info)


def unload_model_weights(sd_model=None, info=None):
    """Free every loaded checkpoint; the next generation loads one again."""
    _run_on_worker(lambda services: services.submit_model_unload(),
                   lambda services: services.models.unload_all())


class _ModelData:
    """A1111's `model_data`: the loaded model (`sd_model`), loaded on demand by `get_sd_model()`."""

    @property
    def sd_model(self):
        return current_model()

    def get_sd_model(self):
        return current_model() or reload_model_weights()

    def __getattr__(self, name: str):
        raise missing_name("modules.sd_models.model_data", name)   # loaded_sd_models, set_sd_model, …


model_data = _ModelData()


def __getattr__(name: str):
    if name == "model_path":
        return str(_services().registry.folder)
    # checkpoints_loaded, load_model_weights, get_checkpoint_state_dict, ModelType, sd1_clip_weight, …
    raise missing_name("modules.sd_models", name)
