"""External VAEs: finding them (A1111 `sd_vae.refresh_vae_list`), choosing one for a checkpoint
(`sd_vae.resolve_vae`), loading them safely, and swapping one into a pipeline for a single job.

Files come from `models/VAE` (.pt .ckpt .safetensors, recursive) and from `<name>.vae.pt/.ckpt/.safetensors`
files in the checkpoint folder. A name from a user (setting, API, infotext) is only matched against the
scanned list; it never becomes a path.

Standalone VAE files come in three layouts, all read here:
* LDM keys without prefix (`encoder.down.0.block.0.conv1.weight`, ...): most downloads (vae-ft-mse, sdxl_vae);
* LDM keys with the checkpoint prefix (`first_stage_model.encoder...`), or a whole checkpoint;
* diffusers keys (`encoder.down_blocks.0.resnets.0.conv1.weight`, ...), e.g. `diffusion_pytorch_model.safetensors`.
Each is turned into the checkpoint layout and built by `loader.build_vae`, the code that builds a checkpoint's
own VAE, so shapes are read from the tensors the same way.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modules.untrusted import user_files
from modules.models.hashes import file_sha256
from modules.models import files

if TYPE_CHECKING:   # diffusers is imported on first load only, so listing VAEs stays cheap
    import torch
    from diffusers import AutoencoderKL

    from modules.models.detect import ModelSpec
    from modules.models.registry import CheckpointInfo, HashCache

log = logging.getLogger(__name__)

AUTOMATIC = "Automatic"   # the `sd_vae` values A1111 adds before the file names
NONE = "None"
VAE_EXTENSIONS = (".pt", ".ckpt", ".safetensors")
NEAR_CHECKPOINT_SUFFIXES = (".vae.pt", ".vae.ckpt", ".vae.safetensors")
LDM_PREFIX = "first_stage_model."
_LDM_TOP = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


class VaeLoadError(Exception):
    """A VAE file that cannot be used; the message names the file and the reason."""


def natural_sort_key(text: str) -> list:
    """A1111's `natural_sort_key`: 'vae2' before 'vae10', case-insensitive."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


@dataclass
class VaeInfo:
    name: str           # what A1111 lists and `sd_vae` holds: the file name ("sdxl_vae.safetensors")
    path: Path          # absolute path
    relative: str = ""  # path relative to the folder it was found in ("sub/sdxl_vae.safetensors")
    _hashes: HashCache | None = field(default=None, repr=False, compare=False)
    _hashing: bool = field(default=True, repr=False, compare=False)
    _sha256: str | None = field(default=None, repr=False, compare=False)

    @property
    def model_name(self) -> str:
        return self.name

    @property
    def stem(self) -> str:
        """The name without its extension: A1111's infotext "VAE" value (`get_loaded_vae_name`)."""
        return os.path.splitext(self.name)[0]

    @property
    def hash_key(self) -> str:
        return f"vae/{self.name}"

    def sha256(self) -> str | None:
        """The file's sha256, computed on first use and cached in cache.json; None with --no-hashing."""
        if not self._hashing:
            return None
        if self._sha256 is None:
            if self._hashes is not None:
                self._sha256 = self._hashes.sha256(self.hash_key, self.path)
            else:
                self._sha256 = file_sha256(self.path)
        return self._sha256

    def shorthash(self) -> str | None:
        """A1111's "VAE hash": the first 10 hex digits of the sha256."""
        value = self.sha256()
        return value[:10] if value else None

    def cached_shorthash(self) -> str | None:
        """The short hash only if it is known without reading the file."""
        if self._sha256 is None and self._hashes is not None and self._hashing:
            try:
                self._sha256 = self._hashes.cached(self.hash_key, self.path)
            except OSError:
                return None
        return self._sha256[:10] if self._sha256 else None


class VaeRegistry:
    """The scanned list of VAE files, refreshable without restart."""

    def __init__(self, vae_folder: Path, checkpoint_folder: Path | None, hashes: HashCache | None, *,
                 hashing: bool = True, forced_path: Path | None = None):
        self.vae_folder = Path(vae_folder)
        self.checkpoint_folder = Path(checkpoint_folder) if checkpoint_folder is not None else None
        self._hashes = hashes
        self._hashing = hashing
        # --vae-path: one file that overrides every other choice (A1111 resolve_vae, first rule).
        self.forced = (self._describe(Path(forced_path).resolve(), Path(forced_path).name)
                       if forced_path is not None else None)
        self._lock = threading.Lock()
        self._items: list[VaeInfo] = []
        self.refresh()

    def _describe(self, path: Path, relative: str) -> VaeInfo:
        return VaeInfo(name=Path(relative).name, path=path, relative=relative, _hashes=self._hashes,
                       _hashing=self._hashing)

    @staticmethod
    def _walk(folder: Path, suffixes: tuple[str, ...]) -> list[tuple[Path, str]]:
        found = []
        if not folder.is_dir():
            return found
        for root, dirs, names in os.walk(folder, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for filename in sorted(names):
                if filename.startswith(".") or not filename.lower().endswith(suffixes):
                    continue
                path = Path(root, filename)
                if user_files.is_regular(path):
                    found.append((path, path.relative_to(folder).as_posix()))
        return found

    def refresh(self) -> list[VaeInfo]:
        # models/VAE first: its files own their bare file names (A1111 lets the VAE folder win a clash).
        scanned = self._walk(self.vae_folder, VAE_EXTENSIONS)
        if self.checkpoint_folder is not None:
            scanned += self._walk(self.checkpoint_folder, NEAR_CHECKPOINT_SUFFIXES)
        by_name: dict[str, VaeInfo] = {}
        seen: set[Path] = set()
        previous = {info.path: info for info in self.items()}
        for path, relative in scanned:
            resolved = path.resolve()
            if resolved in seen:
                continue   # the VAE folder inside the checkpoint folder, or a link to a listed file
            seen.add(resolved)
            info = self._describe(resolved, relative)
            if info.name in by_name:
                info.name = relative   # a second file of the same name stays reachable by its relative path
                if info.name in by_name:
                    log.warning("VAE %s is listed twice; ignoring %s", relative, path)
                    continue
            old = previous.get(resolved)
            if old is not None and old.name == info.name:
                info._sha256 = old._sha256   # keep a computed hash across refreshes (cache.json checks mtime)
            by_name[info.name] = info
        items = sorted(by_name.values(), key=lambda item: natural_sort_key(item.name))
        with self._lock:
            self._items = items
        return list(items)

    def items(self) -> list[VaeInfo]:
        with self._lock:
            return list(self._items)

    def names(self) -> list[str]:
        return [info.name for info in self.items()]

    def choices(self) -> list[str]:
        """The `sd_vae` setting's values, as A1111's dropdown lists them."""
        return [AUTOMATIC, NONE, *self.names()]

    def is_choice(self, setting: str) -> bool:
        """A valid `sd_vae` value: Automatic, None, or a VAE found by name, relative path or stem."""
        return setting in (AUTOMATIC, NONE) or self.find(setting) is not None

    def find(self, name: str | None) -> VaeInfo | None:
        """The scanned VAE for a name: file name, relative path, or file name without extension (infotext "VAE")."""
        if not name or not isinstance(name, str):
            return None
        name = name.strip()
        items = self.items()
        for attribute in ("name", "relative", "stem"):
            for info in items:
                if getattr(info, attribute) == name:
                    return info
        if self.forced is not None and name in (self.forced.name, self.forced.stem):
            return self.forced
        return None

    def near_checkpoint(self, checkpoint: CheckpointInfo | None) -> VaeInfo | None:
        """A1111 `find_vae_near_checkpoint`: a VAE whose file name starts with the checkpoint's stem.

        Files named exactly `<stem>.vae.<ext>` or `<stem>.<ext>` are preferred over A1111's looser prefix match
        (which would also pair `sd.safetensors` with `sdxl_vae.safetensors`).
        """
        if checkpoint is None:
            return None
        stem = Path(checkpoint.filename).name.rsplit(".", 1)[0]
        items = self.items()
        for info in items:
            base = Path(info.path).name
            lower = base.lower()
            for suffix in NEAR_CHECKPOINT_SUFFIXES + VAE_EXTENSIONS:
                if lower.endswith(suffix) and base[: len(base) - len(suffix)] == stem:
                    return info
        return next((info for info in items if Path(info.path).name.startswith(stem)), None)

    def _named(self, setting: str) -> VaeInfo | None:
        if setting == NONE:
            return None
        info = self.find(setting)
        if info is None:
            valid = ", ".join(self.choices())
            raise ValueError(f"unknown VAE {setting!r}; valid choices: {valid}")
        return info

    def resolve(self, setting: str | None, checkpoint: CheckpointInfo | None, *, preferred: str | None = None,
                setting_overrides_preferred: bool = True) -> VaeInfo | None:
        """The VAE to use for a checkpoint, or None for the one inside the checkpoint (A1111 `resolve_vae`).

        In priority order: --vae-path; the `sd_vae` setting when it names a file or "None" and
        `sd_vae_overrides_per_model_preferences` is on; the checkpoint's user-metadata `preferred` VAE;
        with "Automatic", a VAE named after the checkpoint; the setting. A name that matches no file raises
        ValueError listing the valid choices.
        """
        if self.forced is not None:
            return self.forced
        setting = (setting or AUTOMATIC).strip() or AUTOMATIC
        if setting_overrides_preferred and setting != AUTOMATIC:
            return self._named(setting)
        if preferred and preferred != AUTOMATIC:
            if preferred == NONE:
                return None
            info = self.find(preferred)
            if info is not None:
                return info
            log.warning("preferred VAE %r of %s not found; ignoring it", preferred,
                        getattr(checkpoint, "name", checkpoint))
        info = self.near_checkpoint(checkpoint)
        if info is not None:
            return info
        return None if setting == AUTOMATIC else self._named(setting)

    def api_list(self) -> list[dict]:
        """`GET /sdapi/v1/sd-vae`: [{"model_name", "filename"}]."""
        return [{"model_name": info.name, "filename": str(info.path)} for info in self.items()]


def infotext_params(info: VaeInfo | None, *, add_hash: bool = True, add_name: bool = True) -> dict:
    """A1111's infotext keys for the VAE used ("VAE hash" before "VAE"); empty for the checkpoint's own VAE."""
    if info is None:
        return {}
    params = {}
    if add_hash:
        shorthash = info.shorthash()
        if shorthash:
            params["VAE hash"] = shorthash
    if add_name:
        params["VAE"] = info.stem
    return params


# ---------------------------------------------------------------- layouts

_DIFFUSERS_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
                        "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}


def diffusers_vae_to_ldm(state_dict: dict) -> dict:
    """diffusers AutoencoderKL keys → LDM VAE keys (without prefix); keys that map to nothing are dropped."""
    ups = [int(m.group(1)) for key in state_dict if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", key))]
    n_up = max(ups) + 1 if ups else 0
    out = {}
    for key, value in state_dict.items():
        new = key
        if key.startswith(("quant_conv.", "post_quant_conv.", "encoder.conv_in.", "encoder.conv_out.",
                           "decoder.conv_in.", "decoder.conv_out.")):
            pass
        elif m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.+)$", key):
            new = f"{m[1]}.norm_out.{m[2]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{_resnet(m[3])}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{_resnet(m[3])}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", key):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)$", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{_resnet(m[3])}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$", key):
            name = _DIFFUSERS_ATTENTION.get(m[2])
            if name is None:
                continue
            new = f"{m[1]}.mid.attn_1.{name}.{m[3]}"
        else:
            log.debug("VAE key %s has no LDM name; dropped", key)
            continue
        out[new] = value
    return out


def _resnet(suffix: str) -> str:
    return "nin_shortcut." + suffix.removeprefix("conv_shortcut.") if suffix.startswith("conv_shortcut.") else suffix


def vae_layout(state_dict: dict) -> str:
    """'ldm-prefixed', 'ldm', 'diffusers' or 'unknown', from the keys."""
    keys = state_dict.keys()
    if any(key.startswith(LDM_PREFIX + "encoder.down.") for key in keys):
        return "ldm-prefixed"
    if any(key.startswith("encoder.down.") for key in keys) and "encoder.conv_in.weight" in state_dict:
        return "ldm"
    if any(key.startswith("encoder.down_blocks.") for key in keys) or any(
            key.startswith("decoder.up_blocks.") for key in keys):
        return "diffusers"
    return "unknown"


def to_checkpoint_layout(state_dict: dict, filename: str = "VAE file") -> dict:
    """The VAE weights of any supported layout, keyed as inside a checkpoint (`first_stage_model.*`)."""
    layout = vae_layout(state_dict)
    if layout == "ldm-prefixed":
        return {k: v for k, v in state_dict.items() if k.startswith(LDM_PREFIX)}
    if layout == "ldm":
        return {LDM_PREFIX + k: v for k, v in state_dict.items() if k.startswith(_LDM_TOP)}
    if layout == "diffusers":
        return {LDM_PREFIX + k: v for k, v in diffusers_vae_to_ldm(state_dict).items()}
    hint = ""
    keys = list(state_dict)
    if any(k.startswith("model.diffusion_model.") for k in keys):
        hint = " (it is a checkpoint without a VAE)"
    elif any(k.startswith(("lora_unet_", "lora_te", "lora_")) or ".lora_" in k for k in keys):
        hint = " (it looks like a LoRA; it belongs in models/Lora)"
    elif any(k.startswith("control_model.") for k in keys):
        hint = " (it looks like a ControlNet; it belongs in models/ControlNet)"
    raise VaeLoadError(f"{filename}: not a VAE: no encoder/decoder weights found{hint}")


# ---------------------------------------------------------------- loading

def load_vae(info: VaeInfo, spec: ModelSpec, dtype: torch.dtype) -> AutoencoderKL:
    """Read a VAE file safely and build an AutoencoderKL with the checkpoint family's constants (scaling factor)."""
    from modules.models import loader  # imports diffusers: kept off the start-up path

    name = Path(info.path).name
    try:
        state_dict = files.load_state_dict(info.path)
    except files.ModelFileError as error:
        raise VaeLoadError(str(error)) from None
    weights = to_checkpoint_layout(state_dict, name)
    del state_dict
    try:
        return loader.build_vae(weights, spec, dtype)
    except loader.ModelLoadError as error:
        raise VaeLoadError(f"{name}: not a usable VAE: {error}") from None
    except (KeyError, IndexError, ValueError, RuntimeError) as error:
        raise VaeLoadError(f"{name}: not a usable VAE: incomplete or inconsistent weights ({error})") from None


class VaeCache:
    """A few loaded VAEs kept in RAM, most recently used last, keyed by file, mtime, dtype and family constants."""

    def __init__(self, limit: int = 2):
        self.limit = max(1, int(limit))
        self._entries: OrderedDict[tuple, AutoencoderKL] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(info: VaeInfo, spec: ModelSpec, dtype) -> tuple:
        path = Path(info.path)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError as error:
            raise VaeLoadError(f"{path.name}: cannot be read ({error.strerror or error})") from None
        return str(path), mtime, str(dtype), spec.config_variant

    def get(self, info: VaeInfo, spec: ModelSpec, dtype) -> AutoencoderKL:
        key = self.key(info, spec, dtype)
        with self._lock:
            vae = self._entries.get(key)
            if vae is not None:
                self._entries.move_to_end(key)
                return vae
            vae = load_vae(info, spec, dtype)
            # A changed file (new mtime) replaces its stale entries instead of sitting beside them.
            for stale in [k for k in self._entries if k[0] == key[0] and k[1] != key[1]]:
                del self._entries[stale]
            self._entries[key] = vae
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)
            return vae

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


@contextmanager
def swapped_vae(pipeline, vae: AutoencoderKL | None, *, park_device=None):
    """Use `vae` as the pipeline's VAE inside the block; the pipeline's own VAE is back afterwards, whatever happens.

    Plain attribute assignment is diffusers' way: `DiffusionPipeline.__setattr__` also updates the pipeline's
    config entry. `image_processor` only depends on the VAE's downscale factor, which must match (as must the
    latent channels), so it stays valid. The VAE is moved to the device of the pipeline's VAE, keeping its dtype;
    with `park_device` it is moved there (e.g. "cpu") when the block ends.
    """
    original = pipeline.vae
    if vae is None or vae is original:
        yield original
        return
    if vae.config.latent_channels != original.config.latent_channels or _scale_factor(vae) != _scale_factor(original):
        raise VaeLoadError(
            f"this VAE does not fit the model: {vae.config.latent_channels} latent channels and 1/{_scale_factor(vae)}"
            f" scale, the model needs {original.config.latent_channels} and 1/{_scale_factor(original)}")
    vae.to(original.device)
    for flag in ("use_tiling", "use_slicing"):   # enable_tiling()/enable_slicing() set on the pipeline's VAE
        if hasattr(original, flag):
            setattr(vae, flag, getattr(original, flag))
    pipeline.vae = vae
    try:
        yield vae
    finally:
        pipeline.vae = original
        if park_device is not None:
            vae.to(park_device)
