"""ControlNet model files: finding them in models/ControlNet, telling their family, loading them offline.

Users drop three layouts there: lllyasviel's original single files (`control_model.*`, sometimes without the
prefix, sometimes inside a whole SD checkpoint), diffusers' state dict in one file (most SDXL ControlNets) and
diffusers folders (`config.json` + weights). Every shape is read from the weights, as the checkpoint loader
does (`modules.models.loader`), so tiny test models and real ones load through the same code; diffusers'
own converter translates the ldm key names.
"""
from __future__ import annotations

import inspect
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from modules.untrusted import json_file, user_files
from modules.models import families
from modules.models.families import Family
from modules.models.files import ModelFileError, file_kind, load_state_dict, read_safetensors_header
from modules.models.registry import old_hash

if TYPE_CHECKING:
    from diffusers import ControlNetModel

# diffusers (with the checkpoint loader, which imports it) is imported where a ControlNet is converted or built, on
# the worker: importing it here would add seconds to the server's start before its first page.

log = logging.getLogger(__name__)

CONTROLNET_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
# Weight files of a diffusers folder, in order of preference.
FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                  "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
LDM_PREFIX = "control_model."


@cache
def _controlnet_parameters() -> frozenset[str]:
    from diffusers import ControlNetModel

    return frozenset(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}


Shapes = Mapping[str, tuple[int, ...]]
_Stamp = tuple[str, int, int]


class ControlNetLoadError(Exception):
    """A file in models/ControlNet that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class ControlNetInfo:
    name: str                  # file stem, or the folder name for a diffusers folder
    path: Path                 # the file, or the diffusers folder
    shorthash: str | None      # A1111's "old hash", as sd-webui-controlnet lists models

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name


def _distinct_names(found: list[ControlNetInfo]) -> list[ControlNetInfo]:
    """Files that share a stem (x.pth and x.bin, or the same name in two sub-folders) are listed under their file
    name, or their path in the folder: one name, one file, so a choice or an infotext means one model."""
    stems: dict[str, int] = {}
    for info in found:
        stems[info.name.lower()] = stems.get(info.name.lower(), 0) + 1
    named = [replace(info, name=info.path.name) if stems[info.name.lower()] > 1 else info for info in found]
    files: dict[str, int] = {}
    for info in named:
        files[info.name.lower()] = files.get(info.name.lower(), 0) + 1
    return [replace(info, name=str(info.path.parent.name + "/" + info.name)) if files[info.name.lower()] > 1 else info
            for info in named]


# ---------------------------------------------------------------- what a file is

def _layout(keys) -> tuple[str, str]:
    """("ldm", prefix) or ("diffusers", "") for a ControlNet's keys; otherwise says what the file is instead."""
    keys = set(keys)
    if "lora_controlnet" in keys:
        raise ControlNetLoadError("this is a Control-LoRA, which is not supported")
    if "difference" in keys:
        raise ControlNetLoadError("this is a 'difference' ControlNet (it needs its base model), which is not supported")
    if any(key.startswith(LDM_PREFIX) for key in keys):
        return "ldm", LDM_PREFIX
    if "input_hint_block.0.weight" in keys:
        return "ldm", ""
    if "controlnet_cond_embedding.conv_in.weight" in keys:
        return "diffusers", ""
    raise ControlNetLoadError(_what_else(keys))


def _what_else(keys: set[str]) -> str:
    if any(key.startswith("model.diffusion_model.") for key in keys):
        return "this is a Stable Diffusion checkpoint; it belongs in models/Stable-diffusion"
    if any(key.startswith(("lora_unet_", "lora_te")) or ".lora_down." in key or ".lora_A." in key for key in keys):
        return "this is a LoRA; it belongs in models/Lora"
    if any("motion_modules" in key for key in keys):
        return "this is a SparseCtrl model, which is not supported"
    if any("lllite" in key for key in keys):
        return "this is a ControlLLLite model, which is not supported"
    if any(key.startswith(("image_proj", "ip_adapter")) for key in keys):
        return "this is an IP-Adapter, which is not supported"
    if any(key.startswith(("adapter.", "body.")) or key == "style_embedding" for key in keys):
        return "this is a T2I-Adapter, which is not supported"
    return "not a ControlNet model (no control_model.* or controlnet_cond_embedding.* weights)"


def detect_family(keys_and_shapes: Shapes) -> Family:
    """SD 1.x, SD 2.x or SDXL, from a ControlNet's keys (either layout); widths only confirm.

    SDXL has `label_emb` / `add_embedding`; SD2 projects into its transformers with a linear layer, SD1 with
    a 1×1 conv. A real cross-attention width (768 / 1024 / 2048) that disagrees is an error.
    """
    layout, prefix = _layout(keys_and_shapes)
    shapes = {key[len(prefix):]: shape for key, shape in keys_and_shapes.items() if key.startswith(prefix)}
    sdxl_key = "label_emb." if layout == "ldm" else "add_embedding."
    proj_in = next((shape for key, shape in shapes.items() if key.endswith("proj_in.weight")), None)
    context = next((shape[1] for key, shape in shapes.items() if key.endswith("attn2.to_k.weight")), None)
    if any(key.startswith(sdxl_key) for key in shapes):
        family = families.SDXL
    elif proj_in is None:
        raise ControlNetLoadError("a ControlNet without attention layers: cannot tell SD 1.x from SD 2.x")
    else:
        family = families.SD2 if len(proj_in) == 2 else families.SD1
    by_width = families.by_real_context_width(context)   # tiny test models' widths confirm nothing
    if by_width is not None and by_width is not family:
        raise ControlNetLoadError(f"its layers look {family.label} but its cross-attention is "
                                  f"{context} wide ({by_width.label})")
    return family


# ---------------------------------------------------------------- reading files

def _weights_file(path: Path) -> Path:
    """The file holding the weights: the path itself, or the weights inside a diffusers folder."""
    if not path.is_dir():
        return path
    for name in FOLDER_WEIGHTS:
        if (path / name).is_file():
            return path / name
    raise ControlNetLoadError(f"{path.name}: a diffusers folder without {FOLDER_WEIGHTS[0]} (or .bin)")


def _stamp(path: Path) -> _Stamp:
    file = _weights_file(path)
    try:
        stat = file.stat()
    except OSError as error:
        raise ControlNetLoadError(f"{path.name}: cannot be read ({error.strerror or error})") from None
    return str(file), stat.st_mtime_ns, stat.st_size


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_state_dict(_weights_file(path))
    except ModelFileError as error:
        raise ControlNetLoadError(f"{path.name}: {error}") from None


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape: from the header alone for safetensors, by a weights-only load for pickles."""
    file = _weights_file(path)
    try:
        if file_kind(file) == "safetensors":
            header = read_safetensors_header(file)
            return {key: tuple(entry["shape"]) for key, entry in header.items()
                    if key != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("shape"), list)}
    except ModelFileError as error:
        raise ControlNetLoadError(f"{path.name}: {error}") from None
    return {key: tuple(tensor.shape) for key, tensor in _read_weights(path).items()}


def _family_of(path: Path, shapes: Shapes) -> Family:
    try:
        return detect_family(shapes)
    except ControlNetLoadError as error:
        raise ControlNetLoadError(f"{path.name}: {error}") from None


# ---------------------------------------------------------------- shapes → config

def to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ControlNet's weights under diffusers' names, whichever layout the file has."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint

    from modules.models.loader import key_indices

    layout, prefix = _layout(state_dict)
    if layout == "diffusers":
        return state_dict
    ldm = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    downsamplers = key_indices(ldm, r"input_blocks\.(\d+)\.0\.op\.weight")
    layers_per_block = downsamplers[0] - 1 if downsamplers else len(key_indices(ldm, r"input_blocks\.(\d+)\.")) - 1
    converted = convert_controlnet_checkpoint(ldm, {"layers_per_block": layers_per_block})
    # diffusers' converter leaves SDXL's label_emb out; its own mapping table names it.
    for diffusers_key, ldm_key in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
        if ldm_key in ldm:
            converted[diffusers_key] = ldm[ldm_key]
    return {key: value for key, value in converted.items() if value is not None}


def _time_id_width(projection_in: int) -> int:
    """Width of each of SDXL's six sinusoidal time-id embeddings (`addition_time_embed_dim`).

    Weights hold only the sum `pooled text width + 6 × width`, so take the largest power of two that leaves
    a positive pooled width: real SDXL gives 256 (2816 = 1280 + 6 × 256), the tiny test models 8 (80 = 32 + 48).
    """
    width = 1
    while 6 * width * 2 < projection_in:
        width *= 2
    return width


def controlnet_config(shapes: Shapes, family: Family, *, global_pool: bool = False) -> dict:
    """The diffusers ControlNetModel config for weights under diffusers' names (see `to_diffusers`)."""
    from modules.models.loader import bundled_config, key_indices

    parameters = _controlnet_parameters()
    config = {k: v for k, v in bundled_config(family.controlnet_config, "unet").items() if k in parameters}
    levels = []
    for i in key_indices(shapes, r"down_blocks\.(\d+)\."):
        levels.append({
            "channels": shapes[f"down_blocks.{i}.resnets.0.conv1.weight"][0],
            "resnets": len(key_indices(shapes, rf"down_blocks\.{i}\.resnets\.(\d+)\.")),
            "attention": any(key.startswith(f"down_blocks.{i}.attentions.") for key in shapes),
            "depth": len(key_indices(shapes, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")),
        })
    if not levels:
        raise ControlNetLoadError("no down blocks found")
    resnets = {level["resnets"] for level in levels}
    if len(resnets) != 1:
        raise ControlNetLoadError(f"levels have different numbers of ResBlocks: {sorted(resnets)}")
    mid_attention = any(key.startswith("mid_block.attentions.") for key in shapes)
    mid_depth = len(key_indices(shapes, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."))
    if levels[-1]["attention"] and mid_attention and levels[-1]["depth"] != mid_depth:
        raise ControlNetLoadError("the middle block's depth differs from the last level's")
    channels = [level["channels"] for level in levels]
    hint = [shapes["controlnet_cond_embedding.conv_in.weight"][0]]
    hint += [shapes[f"controlnet_cond_embedding.blocks.{i}.weight"][0]
             for i in key_indices(shapes, r"controlnet_cond_embedding\.blocks\.(\d+)\.")[1::2]]   # the stride-2 convs
    config.update(
        in_channels=shapes["conv_in.weight"][1],
        conditioning_channels=shapes["controlnet_cond_embedding.conv_in.weight"][1],
        conditioning_embedding_out_channels=hint,
        block_out_channels=channels,
        layers_per_block=resnets.pop(),
        down_block_types=["CrossAttnDownBlock2D" if level["attention"] else "DownBlock2D" for level in levels],
        # Levels without attention take the middle block's depth: diffusers sizes the middle block from the last.
        transformer_layers_per_block=[level["depth"] if level["attention"] else max(mid_depth, 1)
                                      for level in levels],
        mid_block_type="UNetMidBlock2DCrossAttn" if mid_attention else "UNetMidBlock2D",
        # Heads cannot be read from weights: SD1 uses 8 heads everywhere, SD2 and SDXL 64 channels per head.
        attention_head_dim=family.heads or [max(1, c // 64) for c in channels],
        global_pool_conditions=global_pool,
    )
    proj_in = next((shape for key, shape in shapes.items() if key.endswith("proj_in.weight")), None)
    context = next((shape[1] for key, shape in shapes.items() if key.endswith("attn2.to_k.weight")), None)
    if proj_in is not None:
        config["use_linear_projection"] = len(proj_in) == 2
    if context is not None:
        config["cross_attention_dim"] = context
    if "add_embedding.linear_1.weight" in shapes:
        projection_in = shapes["add_embedding.linear_1.weight"][1]
        config.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=projection_in,
                      addition_time_embed_dim=_time_id_width(projection_in))
    else:
        config.update(addition_embed_type=None, addition_time_embed_dim=None,
                      projection_class_embeddings_input_dim=None)
    return config


def _global_pooling(path: Path, family: Family) -> bool:
    """v1.1 shuffle ControlNets pool their output to one value per channel.

    The original release says so in `<name>.yaml` (`global_average_pooling: True`); without one, the
    extension decides by "shuffle" in the file name (SD1/SD2 only), and so do we.
    """
    sidecar = path.with_suffix(".yaml")
    if sidecar.is_file():
        try:
            config = yaml.safe_load(user_files.read_text(sidecar, limit=1_000_000))
            value = config["model"]["params"]["control_stage_config"]["params"]["global_average_pooling"]
            return bool(value)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, RecursionError):
            pass
    return not family.xl and "shuffle" in path.stem.lower()


# ---------------------------------------------------------------- loading

def _build(weights: dict[str, torch.Tensor], config: dict, path: Path, dtype: torch.dtype) -> ControlNetModel:
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    from modules.models.loader import ModelLoadError, materialise

    try:
        with init_empty_weights():
            model = ControlNetModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
        return materialise(model, weights, "ControlNet", dtype)
    except (ModelLoadError, ValueError, TypeError) as error:
        raise ControlNetLoadError(f"{path.name}: {error}") from None


def _folder_config(folder: Path) -> dict:
    try:
        config = json_file.parse(user_files.read_text(folder / "config.json"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ControlNetLoadError(f"{folder.name}: config.json cannot be read ({error})") from None
    if not isinstance(config, dict) or config.get("_class_name", "ControlNetModel") != "ControlNetModel":
        kind = config.get("_class_name") if isinstance(config, dict) else None
        raise ControlNetLoadError(f"{folder.name}: config.json describes a {kind or 'non-ControlNet'} model, "
                                  "not a ControlNetModel")
    return {k: v for k, v in config.items() if k in _controlnet_parameters()}


def load_controlnet(path: Path, dtype: torch.dtype) -> tuple[ControlNetModel, str]:
    """The ControlNet in a file or diffusers folder, on the CPU in eval mode, and its family.

    Never reaches the hub: a folder's config.json is read here, weights go through the safe loader.
    """
    path = Path(path)
    state_dict = _read_weights(path)
    family = _family_of(path, {key: tuple(value.shape) for key, value in state_dict.items()})
    try:
        weights = to_diffusers(state_dict)
        if path.is_dir():
            config = _folder_config(path)
        else:
            shapes = {key: tuple(value.shape) for key, value in weights.items()}
            config = controlnet_config(shapes, family, global_pool=_global_pooling(path, family))
    except ControlNetLoadError as error:
        raise ControlNetLoadError(f"{path.name}: {error}") from None
    except KeyError as error:
        raise ControlNetLoadError(f"{path.name}: incomplete ControlNet, {error.args[0]} is missing") from None
    return _build(weights, config, path, dtype), family


# ---------------------------------------------------------------- the folder

class ControlNetRegistry:
    """The scanned list of ControlNets in models/ControlNet, refreshable without restart.

    A name from a user is only ever matched against the scanned list; it never becomes a path.
    """

    def __init__(self, folder: Path, *, hashing: bool = True):
        self.folder = Path(folder)
        self._hashing = hashing
        self._lock = threading.Lock()
        self._items: list[ControlNetInfo] = []
        self._families: dict[Path, tuple[_Stamp, str | ControlNetLoadError]] = {}
        self._warned: set[tuple[Path, str]] = set()
        self.refresh()

    def refresh(self) -> list[ControlNetInfo]:
        found = []
        if self.folder.is_dir():
            for root, dirs, files in os.walk(self.folder, followlinks=False):
                dirs.sort()
                root_path = Path(root)
                if root_path != self.folder and "config.json" in files:   # a diffusers folder is one model
                    dirs.clear()
                    found.append(self._describe(root_path.name, root_path))
                    continue
                for filename in sorted(user_files.regular_names(root, files)):
                    if filename.lower().endswith(CONTROLNET_EXTENSIONS):
                        found.append(self._describe(Path(filename).stem, root_path / filename))
        found = _distinct_names(found)
        found.sort(key=lambda info: info.name.lower())
        with self._lock:
            self._items = found
        return list(found)

    def _describe(self, name: str, path: Path) -> ControlNetInfo:
        shorthash = None
        if self._hashing:
            try:
                shorthash = old_hash(_weights_file(path))
            except (OSError, ControlNetLoadError) as error:
                log.warning("ControlNet %s: cannot hash: %s", path.name, error)
        return ControlNetInfo(name=name, path=path, shorthash=shorthash)

    def items(self) -> list[ControlNetInfo]:
        with self._lock:
            return list(self._items)

    def find(self, query: str | None) -> ControlNetInfo | None:
        """The ControlNet a client means: its title, name or file name; a title with a stale hash;
        failing those, as the extension does, the shortest name containing the query (case-insensitive)."""
        if not isinstance(query, str) or query.strip() in ("", "None"):
            return None
        query = query.strip()
        items = self.items()
        for info in items:
            if query in (info.title, info.name, info.path.name):
                return info
        bare = query[: query.rindex(" [")] if query.endswith("]") and " [" in query else query
        lowered = bare.lower()
        for info in items:
            if lowered in (info.name.lower(), info.path.name.lower()):
                return info
        containing = [info for info in items if lowered in info.name.lower()]
        return min(containing, key=lambda info: len(info.name), default=None)

    def family(self, info: ControlNetInfo) -> Family:
        """SD 1.x, SD 2.x or SDXL, read once per file version; raises ControlNetLoadError for unusable files."""
        stamp = _stamp(info.path)
        with self._lock:
            cached = self._families.get(info.path)
        if cached is None or cached[0] != stamp:
            try:
                result: Family | ControlNetLoadError = _family_of(info.path, read_shapes(info.path))
            except ControlNetLoadError as error:
                result = error
            cached = (stamp, result)
            with self._lock:
                self._families[info.path] = cached
        if isinstance(cached[1], ControlNetLoadError):
            raise cached[1]
        return cached[1]

    def remember_family(self, info: ControlNetInfo, family: Family) -> None:
        """What loading the file found, so `family` need not read it again."""
        stamp = _stamp(info.path)
        with self._lock:
            self._families[info.path] = (stamp, family)

    def titles(self, family: Family | None = None) -> list[str]:
        """All titles, or those usable with a checkpoint of `family` (an SDXL refiner takes none)."""
        items = self.items()
        if family is None:
            return [info.title for info in items]
        titles = []
        for info in items:
            try:
                if self.family(info) is family:   # a refiner's family: no ControlNet is made for it
                    titles.append(info.title)
            except ControlNetLoadError as error:
                if (info.path, str(error)) not in self._warned:   # once per problem, not at every refresh
                    self._warned.add((info.path, str(error)))
                    log.warning("ControlNet list: leaving out %s", error)
        return titles


# ---------------------------------------------------------------- loaded models

class ControlNetCache:
    """The loaded ControlNets, least recently used dropped first (the extension's "Model cache size")."""

    def __init__(self, registry: ControlNetRegistry, device: torch.device, dtype: torch.dtype,
                 size: Callable[[], int]):
        self._registry = registry
        self._device = device
        self._dtype = dtype
        self._size = size
        self._lock = threading.Lock()
        self._models: OrderedDict[Path, tuple[_Stamp, ControlNetModel]] = OrderedDict()

    def get(self, info: ControlNetInfo) -> ControlNetModel:
        """The model on the cache's device and dtype; reloaded when its file changed."""
        stamp = _stamp(info.path)
        with self._lock:
            cached = self._models.get(info.path)
            if cached is not None and cached[0] == stamp:
                self._models.move_to_end(info.path)
                return cached[1]
            self._models.pop(info.path, None)
            model, family = load_controlnet(info.path, self._dtype)
            self._registry.remember_family(info, family)
            model = model.to(self._device)
            self._models[info.path] = (stamp, model)
            while len(self._models) > max(1, int(self._size())):
                self._models.popitem(last=False)
            return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
