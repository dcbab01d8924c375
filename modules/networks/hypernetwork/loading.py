"""Reading one hypernetwork file (A1111 `modules/hypernetworks/hypernetwork.py`) into its modules, safely; the
cache of recently used ones.

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

Files are read with `files.load_object` (weights_only=True): a file that needs code is refused, never run.
"""
from __future__ import annotations

import inspect
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modules.models import files
from modules.models.files import ModelFileError

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
