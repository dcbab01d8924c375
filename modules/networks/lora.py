"""LoRA networks: list the files, match them to the loaded model, apply them for one job, remove them after.

How A1111 does it (`extensions-builtin/Lora`) and what is kept here:

* Files (`.safetensors`, `.pt`, `.ckpt`) anywhere under `models/Lora` (and extra folders, e.g. the old
  `models/LyCORIS`); a LoRA is named by its file stem, its alias is the metadata `ss_output_name`. When two
  files share a stem the one scanned later wins (A1111 walks folders in sorted order and overwrites), with a
  log line. An alias used by two files only matches by name (A1111's "forbidden aliases").
* Names from prompts, the API or infotext are only matched against the scanned list: a name never becomes a path.
* Hash: A1111's "addnet" hash (sha256 of a safetensors file after its header; of the whole file for pickles),
  or the metadata `sshs_model_hash`; 12 hex digits in infotext "Lora hashes".
* `<lora:name:te[:unet]>`, named `te=` / `unet=`; missing weights are 1.0; `<lyco:...>` is an alias.

What is different: the maths is diffusers' and peft's. Each LoRA is injected as a peft adapter
(`pipeline.load_lora_weights`, which converts kohya/A1111 keys), weighted with `set_adapters`, and every adapter
is removed when the job ends, leaving the base weights and the module tree exactly as they were. Before
anything is injected each file is checked against the model's real layer shapes (`fits`), so a LoRA for another
model family, or a LyCORIS type diffusers cannot load, is reported as a warning instead of failing or doing
nothing silently.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import re
import struct
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from modules.diffusion import stop_points
from modules.untrusted import user_files
from modules.models.hashes import file_sha256
from modules.models import files
from modules.models.files import ModelFileError

log = logging.getLogger(__name__)

LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
TAG_KINDS = ("lora", "lyco")
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sdxl_refiner": "SDXL refiner"}


# --------------------------------------------------------------------------- hashing

def addnet_hash(path: Path) -> str:
    """A1111's `addnet_hash_safetensors`: sha256 of everything after the 8-byte length and the JSON header."""
    with user_files.open_regular(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
    return file_sha256(path, offset=8 + length)


class LoraHasher:
    """Computes LoRA hashes once per file version: in memory by (path, mtime, size), and in `cache.json`.

    `hashes` is the project's HashCache (key `lora/<name>`, invalidated by mtime). It is read through
    `HashCache.cached`; it is written through `HashCache.store(key, file, value)` when that method exists.
    """

    def __init__(self, hashes=None):
        self._hashes = hashes
        self._memory: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def sha256(self, info: LoraInfo) -> str:
        stat = info.path.stat()
        memory_key = (str(info.path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            found = self._memory.get(memory_key)
        if found:
            return found
        cache_key = f"lora/{info.name}"
        if self._hashes is not None:
            found = self._hashes.cached(cache_key, info.path)
        if not found:
            found = addnet_hash(info.path) if files.file_kind(info.path) == "safetensors" else file_sha256(info.path)
            if self._hashes is not None:
                self._hashes.store(cache_key, info.path, found)
        with self._lock:
            self._memory[memory_key] = found
        return found


_DEFAULT_HASHER = LoraHasher()


# --------------------------------------------------------------------------- listing

@dataclass
class LoraInfo:
    name: str                       # file stem, what `<lora:name:...>` uses
    alias: str                      # metadata ss_output_name, else the name
    path: Path                      # absolute
    metadata: dict[str, str]        # the safetensors __metadata__ ({} for pickles)
    mentioned_name: str | None = field(default=None, compare=False)   # the name the prompt used
    _hasher: LoraHasher | None = field(default=None, repr=False, compare=False)

    def shorthash(self) -> str:
        """A1111's LoRA short hash: metadata `sshs_model_hash` or the addnet hash, first 12 hex digits."""
        from_metadata = self.metadata.get("sshs_model_hash", "")
        if re.fullmatch(r"[0-9a-fA-F]{12,64}", from_metadata):    # metadata is untrusted text: hex only
            return from_metadata[:12].lower()
        try:
            return (self._hasher or _DEFAULT_HASHER).sha256(self)[:12]
        except (OSError, ModelFileError, struct.error) as error:
            log.warning("LoRA %s: cannot hash %s: %s", self.name, self.path, error)
            return ""

    @property
    def sd_version(self) -> str | None:
        """The family kohya's metadata names (A1111's `NetworkOnDisk.detect_version`), if any."""
        version = self.metadata.get("ss_base_model_version", "")
        if version.startswith("sdxl_"):
            return "sdxl"
        if self.metadata.get("ss_v2", "") == "True" or version.startswith("sd_v2"):
            return "sd2"
        if self.metadata:
            return "sd1"
        return None


def _natural_key(text: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


class LoraRegistry:
    """The scanned LoRA files; refreshable without restart (`/sdapi/v1/refresh-loras`)."""

    def __init__(self, folder: Path, *extra_folders: Path, hashes=None):
        self.folders = [Path(folder), *(Path(extra) for extra in extra_folders)]
        self._hasher = LoraHasher(hashes)
        self._lock = threading.Lock()
        self._by_name: dict[str, LoraInfo] = {}
        self._by_alias: dict[str, LoraInfo] = {}
        self._forbidden_aliases: set[str] = set()
        self._metadata_cache: dict[tuple, dict[str, str]] = {}
        self.refresh()

    @property
    def folder(self) -> Path:
        return self.folders[0]

    def _files(self) -> Iterator[Path]:
        for folder in self.folders:
            if not folder.is_dir():
                continue
            walked = sorted(os.walk(folder, followlinks=False), key=lambda entry: _natural_key(entry[0]))
            for root, _dirs, names in walked:
                for filename in sorted(user_files.regular_names(root, names), key=_natural_key):
                    if filename.lower().endswith(LORA_EXTENSIONS):
                        yield Path(root, filename)

    def _metadata(self, path: Path, seen: dict[tuple, dict[str, str]]) -> dict[str, str] | None:
        """The file's metadata, read once per file version; None (and a log line) for a file that is not readable."""
        try:
            stat = path.stat()
            key = (str(path), stat.st_mtime_ns, stat.st_size)
            found = self._metadata_cache.get(key)
            if found is None:
                found = files.read_metadata(path)
            seen[key] = found
            return found
        except (ModelFileError, OSError) as error:
            log.warning("Skipping LoRA file %s: %s", path, error)
            return None

    def refresh(self) -> list[LoraInfo]:
        by_name: dict[str, LoraInfo] = {}
        by_alias: dict[str, LoraInfo] = {}
        forbidden: set[str] = set()
        seen: dict[tuple, dict[str, str]] = {}
        for path in self._files():
            metadata = self._metadata(path, seen)
            if metadata is None:
                continue
            name = path.stem
            alias = metadata.get("ss_output_name") or name
            info = LoraInfo(name=name, alias=alias, path=path.resolve(), metadata=metadata, _hasher=self._hasher)
            if name in by_name:
                log.warning("LoRA name %r is used by %s and %s; the latter is used", name, by_name[name].path, path)
            if alias in by_alias and by_alias[alias].path != info.path:
                forbidden.add(alias.lower())
            by_name[name] = info
            by_alias[name] = info
            by_alias[alias] = info
        with self._lock:
            self._by_name, self._by_alias, self._forbidden_aliases = by_name, by_alias, forbidden
            self._metadata_cache = seen
        return list(by_name.values())

    def items(self) -> list[LoraInfo]:
        with self._lock:
            return list(self._by_name.values())

    def find(self, name_or_alias: str | None) -> LoraInfo | None:
        """The LoRA a prompt names: by file stem, or by alias unless two files share that alias."""
        if not name_or_alias or not isinstance(name_or_alias, str):
            return None
        with self._lock:
            if name_or_alias.lower() in self._forbidden_aliases:
                return self._by_name.get(name_or_alias)
            return self._by_alias.get(name_or_alias)


def api_list(registry: LoraRegistry) -> list[dict]:
    """`GET /sdapi/v1/loras`: A1111's shape."""
    return [{"name": info.name, "alias": info.alias, "path": str(info.path), "metadata": info.metadata}
            for info in registry.items()]


# --------------------------------------------------------------------------- prompt tags → requests

def _weight(text, what: str, tag_name: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"LoRA {tag_name}: {what} weight {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"LoRA {tag_name}: {what} weight {text!r} is not a finite number")
    return value


def requests_from_tags(tags: Iterable, registry: LoraRegistry) -> tuple[list[tuple[LoraInfo, float, float]], list[str]]:
    """`<lora:...>` / `<lyco:...>` tags → [(lora, te_weight, unet_weight)] and warnings, with A1111's rules.

    A tag is any object with `kind`, `name`, `positional` (the arguments after the name) and `named`.
    `<lora:n>` → 1, 1; `<lora:n:w>` → w, w; `<lora:n:te:unet>`; `te=` / `unet=` override the positional ones
    (and `unet` defaults to the final `te`, as in A1111's `extra_networks_lora.activate`).
    """
    requests, warnings = [], []
    for tag in tags:
        if getattr(tag, "kind", None) not in TAG_KINDS:
            continue
        name = str(tag.name)
        info = registry.find(name)
        if info is None:
            warnings.append(f"LoRA not found: {name}")
            continue
        positional = list(getattr(tag, "positional", ()) or ())
        named = dict(getattr(tag, "named", {}) or {})
        try:
            te = _weight(positional[0], "text-encoder", name) if positional else 1.0
            te = _weight(named["te"], "text-encoder", name) if "te" in named else te
            unet = _weight(positional[1], "UNet", name) if len(positional) > 1 else te
            unet = _weight(named["unet"], "UNet", name) if "unet" in named else unet
        except ValueError as error:
            warnings.append(str(error))
            continue
        if len(positional) > 2 or "dyn" in named:
            warnings.append(f"LoRA {name}: the dyn (DyLoRA dimension) argument is not supported and was ignored")
        requests.append((replace(info, mentioned_name=name), te, unet))
    return requests, warnings


def one_per_file(requests: list[tuple[LoraInfo, float, float]]) -> list[tuple[LoraInfo, float, float]]:
    """A LoRA named several times is applied once with the sum of its weights: A1111 applies each mention, and a
    LoRA's change is proportional to its weight, so the result is the same, at the cost of one."""
    merged: dict[Path, list] = {}
    for info, te, unet in requests:
        if info.path in merged:
            merged[info.path][1] += te
            merged[info.path][2] += unet
        else:
            merged[info.path] = [info, te, unet]
    return [tuple(entry) for entry in merged.values()]


def infotext_hashes(applied: Iterable[LoraInfo]) -> str:
    """A1111's "Lora hashes" value: 'name: hash12, name2: hash12' (the name as the prompt wrote it)."""
    hashes: dict[str, str] = {}
    for info in applied:
        short = info.shorthash()
        if short:
            name = (info.mentioned_name or info.name).translate(str.maketrans("", "", ":,"))
            hashes[name] = short
    return ", ".join(f"{name}: {short}" for name, short in hashes.items())


# --------------------------------------------------------------------------- reading the state dict

_UNSAFE_KEY = re.compile(r"__\w*__")

# (a key pattern, the LyCORIS type it marks). diffusers' kohya converter handles lora_down/lora_up/alpha
# (plain LoRA, and LoCon: the same on convolutions); these others it cannot load.
_UNSUPPORTED_TYPES = (
    (re.compile(r"\.hada_w1_a$|\.hada_t1$"), "LoHa"),
    (re.compile(r"\.lokr_w1(_a)?$|\.lokr_w2(_a)?$"), "LoKr"),
    (re.compile(r"\.a1\.weight$|\.b1\.weight$"), "GLoRA"),
    (re.compile(r"\.oft_blocks$|\.oft_diag$|\.oft_R\.weight$"), "OFT"),
    (re.compile(r"\.boft_\w+$"), "BOFT"),
    (re.compile(r"\.on_input$"), "IA3"),
    (re.compile(r"\.diff(_b)?$"), "full (diff)"),
    (re.compile(r"\.w_norm$|\.b_norm$"), "norm"),
    (re.compile(r"\.lora_mid\.weight$"), "LoCon with CP decomposition (lora_mid)"),
)

# kohya / LyCORIS module-name prefixes, and diffusers/peft-format component prefixes.
_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
_DIFFUSERS_LORA_PART = re.compile(
    r"^(unet|text_encoder|text_encoder_2)\.(.+?)"
    r"(\.lora_A\.weight|\.lora_B\.weight|[._]lora\.down\.weight|[._]lora\.up\.weight|"
    r"\.lora_linear_layer\.down\.weight|\.lora_linear_layer\.up\.weight|\.alpha)$")
_ATTN_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)$")


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


def unsupported_type(state_dict: dict) -> str | None:
    """The LyCORIS type of a file diffusers cannot load (LoHa, LoKr, GLoRA, OFT, IA3, full/diff, ...), or None."""
    for key in state_dict:
        for pattern, kind in _UNSUPPORTED_TYPES:
            if pattern.search(key):
                return kind
    return None


def _split_key(key: str) -> tuple[str, str] | None:
    """(module name in kohya form, part) for a LoRA key; None for keys of no known layout.

    kohya: 'lora_unet_down_blocks_0_..._to_q.lora_down.weight' → ('lora_unet_down_blocks_0_..._to_q', 'down').
    diffusers/peft: 'unet.down_blocks.0....to_q.lora_A.weight' → ('lora_unet_down_blocks_0_..._to_q', 'down');
    text encoders become 'lora_te@_...' and 'lora_te2_...' ('@' is resolved against the model later).
    """
    if key.startswith(_KOHYA_PREFIXES):
        module, _, part = key.partition(".")
        kinds = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}
        return module, kinds.get(part, part)
    match = _DIFFUSERS_LORA_PART.match(key)
    if match is None:
        return None
    component, path, part = match.groups()
    processor = _ATTN_PROCESSOR.search(path)
    if processor is not None:   # the old attention-processor layout: attn1.processor.to_q_lora.down.weight
        path = path[: processor.start()] + "." + processor.group(1) + (".0" if processor.group(1) == "to_out" else "")
    path = path.removeprefix("text_model.")
    prefix = {"unet": "lora_unet_", "text_encoder": "lora_te@_text_model_", "text_encoder_2": "lora_te2_text_model_"}
    part = "alpha" if part == ".alpha" else ("down" if ("lora_A" in part or ".down." in part) else "up")
    return prefix[component] + path.replace(".", "_"), part


def _lora_layers(state_dict: dict) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """{module: {"down": tensor, "up": tensor, ...}} and the keys of no known layout."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state_dict.items():
        split = _split_key(key)
        if split is None:
            unknown.append(key)
            continue
        layers.setdefault(split[0], {})[split[1]] = value
    return layers, unknown


def _width(tensor: torch.Tensor | None, dim: int) -> int | None:
    return int(tensor.shape[dim]) if tensor is not None and tensor.ndim > dim else None


def lora_family(state_dict: dict, metadata: dict[str, str] | None = None) -> str | None:
    """"sd1" | "sd2" | "sdxl" | None: the family a LoRA was made for, from its keys (and widths, and metadata).

    Key layout decides first, so tiny test LoRAs are recognised like real ones: `lora_te1_`/`lora_te2_` (or a
    second text encoder, or a UNet transformer depth above 1) is SDXL. Then real widths: cross-attention
    `attn2.to_k` input 768 → SD 1.x, 1024 → SD 2.x, 2048 → SDXL; text-encoder input 768 → SD 1.x, 1024 → SD 2.x.
    Then kohya's metadata. An SD-style LoRA with unknown widths counts as SD 1.x.
    """
    layers, _unknown = _lora_layers(state_dict)
    names = list(layers)
    if not names:
        return None
    if any(name.startswith(("lora_te1_", "lora_te2_")) for name in names):
        return "sdxl"
    if any(re.search(r"transformer_blocks_[1-9]", name) for name in names if name.startswith("lora_unet_")):
        return "sdxl"
    for name, parts in layers.items():
        if name.startswith("lora_unet_") and re.search(r"attn2_to_k$", name):
            width = _width(parts.get("down"), 1)
            if width in (768, 1024, 2048):
                return {768: "sd1", 1024: "sd2", 2048: "sdxl"}[width]
    for name, parts in layers.items():
        if name.startswith(("lora_te_", "lora_te@_")) and name.endswith("q_proj"):
            width = _width(parts.get("down"), 1)
            if width in (768, 1024):
                return {768: "sd1", 1024: "sd2"}[width]
    metadata = metadata or {}
    version = str(metadata.get("ss_base_model_version", ""))
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2") or str(metadata.get("ss_v2", "")) == "True":
        return "sd2"
    return "sd1"


# --------------------------------------------------------------------------- matching against the model

def pipeline_family(pipeline) -> str:
    """The family of a loaded diffusers pipeline (for messages, when the caller does not say)."""
    if getattr(pipeline, "text_encoder_2", None) is not None:
        return "sdxl" if getattr(pipeline, "text_encoder", None) is not None else "sdxl_refiner"
    config = pipeline.unet.config
    if config.cross_attention_dim == 1024 or (config.cross_attention_dim != 768 and config.use_linear_projection):
        return "sd2"
    return "sd1"


def _sgm_unet_names(unet) -> dict[str, str]:
    """diffusers UNet module name → its SGM/LDM name (kohya writes SDXL LoRAs with these), for block modules."""
    names = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "conv_out": "out.2"}
    resnet = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
              "conv_shortcut": "skip_connection"}
    prefixes: dict[str, str] = {}
    resnet_prefixes = set()
    index = 1
    for i, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            prefixes[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{index}.0"
            resnet_prefixes.add(f"down_blocks.{i}.resnets.{j}")
            if getattr(block, "attentions", None):
                prefixes[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{index}.1"
            index += 1
        if getattr(block, "downsamplers", None):
            prefixes[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1
    if unet.mid_block is not None:
        for j in range(len(unet.mid_block.resnets)):
            prefixes[f"mid_block.resnets.{j}"] = f"middle_block.{2 * j}"
            resnet_prefixes.add(f"mid_block.resnets.{j}")
        if getattr(unet.mid_block, "attentions", None):
            prefixes["mid_block.attentions.0"] = "middle_block.1"
    index = 0
    for i, block in enumerate(unet.up_blocks):
        has_attention = bool(getattr(block, "attentions", None))
        for j in range(len(block.resnets)):
            prefixes[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{index}.0"
            resnet_prefixes.add(f"up_blocks.{i}.resnets.{j}")
            if has_attention:
                prefixes[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{index}.1"
            index += 1
        if getattr(block, "upsamplers", None):
            prefixes[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{index - 1}.{2 if has_attention else 1}.conv"

    longest_first = sorted(prefixes, key=len, reverse=True)

    def sgm(name: str) -> str | None:
        if name in names:
            return names[name]
        for prefix in longest_first:
            if name == prefix or name.startswith(prefix + "."):
                rest = name[len(prefix) + 1:]
                if prefix in resnet_prefixes and rest in resnet:
                    rest = resnet[rest]
                return prefixes[prefix] + ("." + rest if rest else "")
        return None

    return {name: sgm(name) for name, _ in _layers(unet)}


def _layers(model) -> list[tuple[str, torch.nn.Module]]:
    """Linear and Conv2d layers by name; a layer already wrapped by peft counts as its base layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out, wrapped = [], []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in wrapped):
            continue
        if isinstance(module, BaseTunerLayer):
            wrapped.append(name)
            out.append((name, module.get_base_layer()))
        elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            out.append((name, module))
    return out


@dataclass
class _Target:
    component: str                  # "unet" | "text_encoder" | "text_encoder_2"
    canonical: str                  # the kohya name diffusers' converter maps to this layer
    layer: torch.nn.Module


def _targets(pipeline, family: str) -> dict[str, _Target]:
    """Every kohya module name (SD1-style and SGM-style for the UNet) → the model layer it means."""
    table: dict[str, _Target] = {}
    unet = pipeline.unet
    sgm = _sgm_unet_names(unet)
    for name, layer in _layers(unet):
        plain = "lora_unet_" + name.replace(".", "_")
        sgm_name = "lora_unet_" + sgm[name].replace(".", "_") if sgm.get(name) else None
        # diffusers' converter maps every diffusers-style name except add_embedding, which it knows as label_emb.
        canonical = sgm_name if name.startswith("add_embedding.") and sgm_name else plain
        target = _Target("unet", canonical, layer)
        table[plain] = target
        if sgm_name:
            table.setdefault(sgm_name, target)
    if family.startswith("sdxl"):
        encoders = (("text_encoder", ("lora_te1_",)), ("text_encoder_2", ("lora_te2_",)))
    else:   # A1111 also accepts lora_te1_ keys on SD 1.x ("some SD1 LoRAs also have correct compvis keys")
        encoders = (("text_encoder", ("lora_te_", "lora_te1_")),)
    for component, kohya_prefixes in encoders:
        encoder = getattr(pipeline, component, None)
        if encoder is None:
            continue
        for name, layer in _layers(encoder):
            name = name.removeprefix("text_model.")
            suffix = "text_model_" + name.replace(".", "_")
            for prefix in kohya_prefixes:
                table[prefix + suffix] = _Target(component, kohya_prefixes[0] + suffix, layer)
            if component == "text_encoder":   # diffusers-format keys (`text_encoder.`), see _split_key
                table["lora_te@_" + suffix] = _Target(component, kohya_prefixes[0] + suffix, layer)
    return table


def _shape_fits(parts: dict[str, torch.Tensor], layer: torch.nn.Module) -> bool:
    down, up = parts.get("down"), parts.get("up")
    if down is None or up is None or down.shape[0] != up.shape[1]:
        return False
    if isinstance(layer, torch.nn.Conv2d):
        return (down.ndim == 4 and up.ndim == 4 and down.shape[1] == layer.in_channels
                and tuple(down.shape[2:]) == tuple(layer.kernel_size) and up.shape[0] == layer.out_channels)
    return down.ndim == 2 and up.ndim == 2 and down.shape[1] == layer.in_features and up.shape[0] == layer.out_features


@dataclass
class Match:
    total: int                                  # LoRA layers in the file
    matched: dict[str, _Target]                 # LoRA module name → model layer, shapes checked
    missing: list[str]                          # names with no layer in the model
    wrong_shape: list[str]                      # names whose layer exists but has other widths
    unknown_keys: list[str]                     # keys of no known LoRA layout


def match(state_dict: dict, pipeline, family: str | None = None) -> Match:
    family = family or pipeline_family(pipeline)
    layers, unknown = _lora_layers(state_dict)
    table = _targets(pipeline, family)
    matched, missing, wrong = {}, [], []
    for name, parts in layers.items():
        target = table.get(name)
        if target is None:
            missing.append(name)
        elif _shape_fits(parts, target.layer):
            matched[name] = target
        else:
            wrong.append(name)
    return Match(len(layers), matched, missing, wrong, unknown)


def _refusal(found: Match, state_dict: dict, family: str, metadata: dict | None = None) -> str | None:
    if found.total == 0:
        return "the file holds no LoRA weights (no lora_unet_/lora_te_ keys)"
    if len(found.matched) == found.total:
        return None
    made_for = lora_family(state_dict, metadata)
    counts = f"{len(found.matched)}/{found.total} keys match"
    model = FAMILY_LABELS.get(family, family)
    if made_for and made_for != family.removesuffix("_refiner"):
        return f"made for {FAMILY_LABELS[made_for]}, but the checkpoint is {model}: {counts}"
    if not found.matched or found.wrong_shape:
        example = (found.wrong_shape or found.missing)[0]
        why = "has other widths" if found.wrong_shape else "has no counterpart"
        return f"does not fit the {model} checkpoint: {counts} (e.g. {example} {why})"
    return None     # same family, some layers absent from this model: applied in part, with a warning


def fits(state_dict: dict, pipeline, family: str | None = None) -> str | None:
    """None when the LoRA's layers and shapes fit the model, else the reason it does not.

    e.g. "made for SDXL, but the checkpoint is SD 1.x: 0/120 keys match". A LoRA of the model's own family
    whose layers all fit except some the model lacks (a layer count difference, say) fits: those are skipped.
    """
    family = family or pipeline_family(pipeline)
    return _refusal(match(state_dict, pipeline, family), state_dict, family)


# --------------------------------------------------------------------------- applying for one job

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
def applied(pipeline, family: str, requests: list[tuple[LoraInfo, float, float]],
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
            reason = _refusal(found, state_dict, family, info.metadata)
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
