"""Hypernetworks (A1111 `modules/hypernetworks/hypernetwork.py`, `extra_networks_hypernet.py`): list the files,
read them safely, and apply them to a pipeline for one job.

The file format (A1111's `Hypernetwork.save`): a pickled dict whose integer keys are context widths (768, 320,
640, 1280, 1024, ...), each mapping to two state dicts, one for the keys' and one for the values' module, plus
metadata: `name`, `layer_structure` (default [1, 2, 1]), `activation_func`, `is_layer_norm`,
`weight_initialization`, `use_dropout`, `dropout_structure`, `activate_output`, `last_layer_dropout`, `step`,
`sd_checkpoint`, `sd_checkpoint_name`, `optional_info`. Each module is a `Sequential` named `linear` of Linear
layers of widths `dim * layer_structure[i] → dim * layer_structure[i + 1]`, each followed by the activation
(not after the last unless `activate_output`), a LayerNorm (`is_layer_norm`) and a Dropout where the dropout
structure says so. Those extra layers take indexes in the Sequential, so the Linear keys of a file are
`linear.0.weight`, `linear.2.weight`, ... — the layout here is rebuilt exactly from the metadata and the file's
keys and shapes are checked against it before any weight is used. The oldest files (`linear1.*`, `linear2.*`)
are renamed as A1111 does.

A module computes `x + linear(x) * multiplier`. In A1111 every attention layer (its hijacked `CrossAttention`)
runs `context = default(context, x)` and then, for each loaded hypernetwork whose file has a module for
`context.shape[-1]`, `context_k = module_k(context_k)`, `context_v = module_v(context_v)`; keys and values are
`to_k(context_k)`, `to_v(context_v)`; queries are untouched. So a 768 module changes SD 1.x's cross-attention
(its text context is 768 wide) and the 320 / 640 / 1280 modules that A1111's "Create hypernetwork" adds by
default change the self-attention layers of those widths. Here that is done by an attention processor
(`HypernetworkAttnProcessor`) set on the fitting `Attention` layers of the UNet (and of a ControlNet, which A1111
also reaches) for the job only, and the original processor objects are put back afterwards.

Files are read with `files.load_object` (weights_only=True): a file that needs code is refused, never run.
"""
from __future__ import annotations

import copy
import inspect
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modules.diffusion import stop_points
from modules.untrusted import user_files
from modules.diffusion.attention_processor import AttentionProcessor
from modules.models import files
from modules.models.files import ModelFileError

log = logging.getLogger(__name__)

EXTENSION = ".pt"
TAG_KIND = "hypernet"
DEFAULT_LAYER_STRUCTURE = (1.0, 2.0, 1.0)
MAX_LAYERS = 64           # entries of layer_structure; A1111 files have 3 to 5

# A1111's `HypernetworkModule.activation_dict`, same quirks: "swish" is Hardswish, and every class defined in
# torch.nn.modules.activation is also accepted under its lower-cased name.
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
}
ACTIVATIONS.update({name.lower(): cls for name, cls in inspect.getmembers(torch.nn.modules.activation, inspect.isclass)
                    if cls.__module__ == "torch.nn.modules.activation"})

# The oldest hypernetworks (autumn 2022) name their two layers linear1 / linear2 (A1111 `fix_old_state_dict`).
_OLD_KEYS = {"linear1.weight": "linear.0.weight", "linear1.bias": "linear.0.bias",
             "linear2.weight": "linear.1.weight", "linear2.bias": "linear.1.bias"}


class HypernetworkError(ModelFileError):
    """A hypernetwork file that cannot be used; the message names the file and the reason."""


# --------------------------------------------------------------------------- listing

@dataclass(frozen=True)
class HypernetworkInfo:
    name: str          # file stem: what `<hypernet:name>` and the API use
    path: Path         # absolute


def _natural_key(text: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


class HypernetworkRegistry:
    """The `.pt` files under `models/hypernetworks` (recursive), by file stem; refreshable without restart.

    As A1111's `list_hypernetworks`: files are not opened to be listed; when two files share a stem the one
    found later (sorted order) wins; a file named `None.pt` is not listed (None is the "no hypernetwork" choice).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._by_name: dict[str, HypernetworkInfo] = {}
        self.refresh()

    def _files(self) -> Iterator[Path]:
        if not self.folder.is_dir():
            return
        walked = sorted(os.walk(self.folder, followlinks=False), key=lambda entry: _natural_key(entry[0]))
        for root, _dirs, names in walked:
            for filename in sorted(user_files.regular_names(root, names), key=_natural_key):
                if filename.lower().endswith(EXTENSION):
                    yield Path(root, filename)

    def refresh(self) -> list[HypernetworkInfo]:
        by_name: dict[str, HypernetworkInfo] = {}
        for path in self._files():
            name = path.stem
            if name == "None":
                continue
            if name in by_name:
                log.warning("Hypernetwork name %r is used by %s and %s; the latter is used", name,
                            by_name[name].path, path)
            by_name[name] = HypernetworkInfo(name=name, path=path.resolve())
        with self._lock:
            self._by_name = by_name
        return list(by_name.values())

    def items(self) -> list[HypernetworkInfo]:
        with self._lock:
            return list(self._by_name.values())

    def find(self, name: str | None) -> HypernetworkInfo | None:
        """The hypernetwork a prompt names, by exact file stem (as A1111); a name never becomes a path."""
        if not name or not isinstance(name, str):
            return None
        with self._lock:
            return self._by_name.get(name)


def api_list(registry: HypernetworkRegistry) -> list[dict]:
    """`GET /sdapi/v1/hypernetworks`: A1111's shape, [{"name", "path"}]."""
    return [{"name": info.name, "path": str(info.path)} for info in registry.items()]


# --------------------------------------------------------------------------- prompt tags → requests

def requests_from_tags(tags: Iterable, registry: HypernetworkRegistry
                       ) -> tuple[list[tuple[HypernetworkInfo, float]], list[str]]:
    """`<hypernet:name[:multiplier]>` tags → [(hypernetwork, multiplier)] and warnings.

    A1111 (`ExtraNetworkHypernet.activate`): the name is `items[0]`, the multiplier `float(items[1])` when there
    is a second item, else 1.0. A tag is any object with `kind` and `name`, and `items` (all `:`-separated parts)
    or `positional` (the parts after the name). Unknown names and multipliers that are not finite numbers are
    warnings and the tag is skipped.
    """
    requests, warnings = [], []
    for tag in tags:
        if getattr(tag, "kind", None) != TAG_KIND:
            continue
        name = str(tag.name)
        items = tuple(getattr(tag, "items", ()) or (name, *(getattr(tag, "positional", ()) or ())))
        info = registry.find(name)
        if info is None:
            warnings.append(f"Hypernetwork not found: {name}")
            continue
        multiplier = 1.0
        if len(items) > 1:
            try:
                multiplier = float(items[1])
            except (TypeError, ValueError):
                multiplier = math.nan
            if not math.isfinite(multiplier):
                warnings.append(f"Hypernetwork {name}: multiplier {items[1]!r} is not a finite number; not applied")
                continue
        requests.append((info, multiplier))
    return requests, warnings


# --------------------------------------------------------------------------- the file

class HypernetworkModule(torch.nn.Module):
    """One of the two modules (keys or values) of one width. `linear` is A1111's Sequential, same indexes."""

    def __init__(self, linear: torch.nn.Sequential):
        super().__init__()
        self.linear = linear

    @property
    def width(self) -> int:
        return next(layer for layer in self.linear if isinstance(layer, torch.nn.Linear)).in_features

    def forward(self, x: torch.Tensor, multiplier: float = 1.0) -> torch.Tensor:
        return x + self.linear(x) * multiplier


@dataclass(frozen=True)
class Hypernetwork:
    name: str                                   # the file's `name` entry, else the file stem (A1111)
    path: Path
    layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]]   # width → (keys' module, values' module)
    layer_structure: tuple[float, ...]
    activation_func: str | None
    is_layer_norm: bool
    activate_output: bool
    dropout_structure: tuple[float, ...]
    metadata: dict = field(default_factory=dict)  # step, sd_checkpoint, sd_checkpoint_name, weight_initialization…

    @property
    def widths(self) -> list[int]:
        return sorted(self.layers)


def _dropout_structure(layer_structure, use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """A1111's `parse_dropout_structure`, for files saved before `dropout_structure` was stored."""
    if not use_dropout:
        return [0.0] * len(layer_structure)
    return [0.0] + [0.3] * (len(layer_structure) - 3) + [0.3 if last_layer_dropout else 0.0, 0.0]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _sequential(dim: int, structure, activation: str | None, layer_norm: bool, activate_output: bool,
                dropout, fail) -> torch.nn.Sequential:
    """A1111's `HypernetworkModule.__init__` layout, with Linear/LayerNorm weights on the meta device (no memory:
    the sizes come from the file's metadata, which is untrusted until the file's tensors are checked against it)."""
    layers: list[torch.nn.Module] = []
    for i in range(len(structure) - 1):
        fan_in, fan_out = int(dim * structure[i]), int(dim * structure[i + 1])
        if fan_in < 1 or fan_out < 1:
            fail(f"layer_structure {list(structure)} gives an empty layer for width {dim}")
        layers.append(torch.nn.Linear(fan_in, fan_out, device="meta"))
        if not (activation in (None, "linear") or (i >= len(structure) - 2 and not activate_output)):
            try:
                layers.append(ACTIVATIONS[activation]())
            except TypeError:
                fail(f"activation function {activation!r} is not supported")
        if layer_norm:
            layers.append(torch.nn.LayerNorm(fan_out, device="meta"))
        if dropout[i + 1] > 0:
            layers.append(torch.nn.Dropout(p=float(dropout[i + 1])))
    return torch.nn.Sequential(*layers)


def _module(dim: int, state_dict, config: dict, fail) -> HypernetworkModule:
    if not isinstance(state_dict, Mapping):
        fail(f"the entry for width {dim} does not hold state dicts")
    weights = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            fail(f"the state dict for width {dim} holds something other than named tensors ({str(key)[:60]!r})")
        if not value.is_floating_point():
            fail(f"{key} for width {dim} is not a floating-point tensor")
        weights[_OLD_KEYS.get(key, key)] = value
    module = HypernetworkModule(_sequential(dim, **config, fail=fail))
    expected = module.state_dict()
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    if missing or unexpected:
        fail(f"the weights for width {dim} do not match its layer_structure / activation / layer norm settings "
             f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    for key, tensor in expected.items():
        if tuple(weights[key].shape) != tuple(tensor.shape):
            fail(f"{key} for width {dim} has shape {tuple(weights[key].shape)}, expected {tuple(tensor.shape)}")
    module.load_state_dict({key: weights[key].detach().to(torch.float32).clone().contiguous() for key in expected},
                           strict=True, assign=True)
    module.requires_grad_(False)
    return module.eval()


def load_hypernetwork(path: str | Path) -> Hypernetwork:
    """Read an A1111 hypernetwork file safely; HypernetworkError (a ModelFileError) names the file and the problem."""
    path = Path(path)

    def fail(reason: str):
        raise HypernetworkError(f"{path.name}: not a usable hypernetwork: {reason}")

    data = files.load_object(path)      # ModelFileError for unreadable or code-carrying files
    if not isinstance(data, Mapping):
        fail("the file does not hold a dict")
    widths = [key for key in data if type(key) is int]
    if not widths:
        fail("it has no modules (no integer context-width keys); it may be another kind of .pt file")

    structure = data.get("layer_structure")
    structure = DEFAULT_LAYER_STRUCTURE if structure is None else structure
    if (not isinstance(structure, (list, tuple)) or not 2 <= len(structure) <= MAX_LAYERS
            or not all(_is_number(value) and value > 0 for value in structure)):
        fail(f"layer_structure {structure!r} is not a list of positive numbers")
    if structure[0] != 1 or structure[-1] != 1:
        fail(f"layer_structure {list(structure)} must start and end with 1")
    activation = data.get("activation_func")
    if activation is not None and (not isinstance(activation, str) or activation not in ACTIVATIONS):
        fail(f"activation function {activation!r} is not supported")
    layer_norm = data.get("is_layer_norm", False)
    activate_output = data.get("activate_output", True)
    use_dropout = data.get("use_dropout", False)
    last_layer_dropout = data.get("last_layer_dropout", False)
    for key, value in (("is_layer_norm", layer_norm), ("activate_output", activate_output),
                       ("use_dropout", use_dropout), ("last_layer_dropout", last_layer_dropout)):
        if value is not None and not isinstance(value, (bool, int)):   # None: A1111 reads it as False
            fail(f"{key} is {value!r}, not a boolean")
    dropout = data.get("dropout_structure")
    if dropout is not None and any(dropout):
        use_dropout = True
    if dropout is None:
        dropout = _dropout_structure(structure, bool(use_dropout), bool(last_layer_dropout))
    if (not isinstance(dropout, (list, tuple)) or len(dropout) < len(structure)
            or not all(_is_number(value) and value < 1 for value in dropout)):
        fail(f"dropout_structure {dropout!r} does not fit layer_structure {list(structure)}")

    config = {"structure": tuple(float(v) for v in structure), "activation": activation,
              "layer_norm": bool(layer_norm), "activate_output": bool(activate_output),
              "dropout": tuple(float(v) for v in dropout)}
    layers = {}
    for width in sorted(widths):
        pair = data[width]
        if width < 1 or not isinstance(pair, (list, tuple)) or len(pair) < 2:
            fail(f"the entry for width {width} is not a pair of state dicts")
        layers[width] = (_module(width, pair[0], config, fail), _module(width, pair[1], config, fail))

    name = data.get("name")
    metadata = {key: data[key] for key in ("step", "sd_checkpoint", "sd_checkpoint_name", "weight_initialization",
                                           "use_dropout", "last_layer_dropout", "optional_info")
                if isinstance(data.get(key), (str, int, float, bool))}
    return Hypernetwork(name=name if isinstance(name, str) and name else path.stem, path=path, layers=layers,
                        layer_structure=config["structure"], activation_func=activation,
                        is_layer_norm=config["layer_norm"], activate_output=config["activate_output"],
                        dropout_structure=config["dropout"], metadata=metadata)


class HypernetworkCache:
    """Recently used hypernetworks (on the CPU), keyed by path + mtime + size; least recently used goes first."""

    def __init__(self, max_items: int = 8):
        self.max_items = max_items
        self._items: OrderedDict[tuple, Hypernetwork] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> Hypernetwork:
        """The loaded file (shared with later jobs: never modify it). ModelFileError / OSError if unusable."""
        stat = Path(path).stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        loaded = load_hypernetwork(path)
        with self._lock:
            for old in [k for k in self._items if k[0] == key[0]]:   # an older version of the same file
                del self._items[old]
            self._items[key] = loaded
            while len(self._items) > max(self.max_items, 0):
                self._items.popitem(last=False)
        return loaded

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


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
