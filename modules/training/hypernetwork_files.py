"""Creating and saving hypernetworks in A1111's `.pt` layout (Train tab → Create hypernetwork,
`POST /sdapi/v1/create/hypernetwork`; the trained files), which A1111 and this web UI's loader
(`networks/hypernetwork/loading.py`) read.

A1111's file (`Hypernetwork.save`): a dict whose integer keys are context widths, each holding the state dicts of
the keys' and the values' module (a Sequential named `linear`: Linear layers of widths dim·s[i] → dim·s[i+1], each
followed by the activation — not after the last —, a LayerNorm when asked and a Dropout where the dropout
structure is above 0), plus `step`, `name`, `layer_structure`, `activation_func`, `is_layer_norm`,
`weight_initialization`, `sd_checkpoint`, `sd_checkpoint_name`, `activate_output`, `use_dropout`,
`dropout_structure`, `last_layer_dropout` and `optional_info`.
"""
from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from modules.images import replace_atomically
from modules.networks.hypernetwork import ACTIVATIONS, HypernetworkModule
from modules.training.embedding_files import file_name as embedding_file_name

WEIGHT_INITIALIZATIONS = ("Normal", "KaimingUniform", "KaimingNormal", "XavierUniform", "XavierNormal")
# A1111's Create hypernetwork offers every activation but these two (they cannot be built without arguments)
NOT_OFFERED_ACTIVATIONS = ("hardswish", "multiheadattention")


class HypernetworkFileError(ValueError):
    """A name, folder or existing file that does not allow the hypernetwork to be created."""


def offered_activations() -> list[str]:
    """A1111's choices: the activations that can be built without arguments."""
    offered = []
    for name, cls in ACTIVATIONS.items():
        if name in NOT_OFFERED_ACTIVATIONS:
            continue
        try:
            cls()
        except TypeError:
            continue
        offered.append(name)
    return offered


def file_name(name: str) -> str:
    """A1111's rule (the same as for embeddings): only letters, digits, '.', '_', '-' and spaces are kept."""
    try:
        return embedding_file_name(name)
    except ValueError:
        raise HypernetworkFileError(f"hypernetwork name {name!r} has no usable characters "
                                    "(letters, digits, . _ - space)") from None


@dataclass(frozen=True)
class Structure:
    """What shapes a hypernetwork's modules (the file's metadata of that name)."""
    layer_structure: tuple[float, ...]
    activation_func: str | None
    add_layer_norm: bool
    dropout_structure: tuple[float, ...]
    activate_output: bool = False


def sequential(dim: int, structure: Structure) -> torch.nn.Sequential:
    """A1111's `HypernetworkModule.__init__` layout (the Sequential's indexes are the file's keys)."""
    sizes = structure.layer_structure
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        fan_out = int(dim * sizes[i + 1])
        layers.append(torch.nn.Linear(int(dim * sizes[i]), fan_out))
        last = i >= len(sizes) - 2
        if structure.activation_func not in (None, "linear") and (not last or structure.activate_output):
            layers.append(ACTIVATIONS[structure.activation_func]())
        if structure.add_layer_norm:
            layers.append(torch.nn.LayerNorm(fan_out))
        if structure.dropout_structure[i + 1] > 0:
            layers.append(torch.nn.Dropout(p=structure.dropout_structure[i + 1]))
    return torch.nn.Sequential(*layers)


def initialise(module: torch.nn.Sequential, weight_init: str, activation_func: str | None,
               generator: torch.Generator) -> None:
    """A1111's initialisations: "Normal" (and every LayerNorm) N(0, 0.01) weights and zero biases; Xavier and
    Kaiming (leaky_relu gain for leakyrelu, else relu) weights with zero biases."""
    init = torch.nn.init
    nonlinearity = "leaky_relu" if activation_func == "leakyrelu" else "relu"
    with torch.no_grad():
        for layer in module:
            if not isinstance(layer, (torch.nn.Linear, torch.nn.LayerNorm)):
                continue
            weight = layer.weight
            if weight_init == "Normal" or isinstance(layer, torch.nn.LayerNorm):
                init.normal_(weight, mean=0.0, std=0.01, generator=generator)
            elif weight_init == "XavierUniform":
                init.xavier_uniform_(weight, generator=generator)
            elif weight_init == "XavierNormal":
                init.xavier_normal_(weight, generator=generator)
            elif weight_init == "KaimingUniform":
                init.kaiming_uniform_(weight, nonlinearity=nonlinearity, generator=generator)
            elif weight_init == "KaimingNormal":
                init.kaiming_normal_(weight, nonlinearity=nonlinearity, generator=generator)
            else:
                raise HypernetworkFileError(f"weight initialization {weight_init!r} is not one of "
                                            f"{', '.join(WEIGHT_INITIALIZATIONS)}")
            init.zeros_(layer.bias)


@dataclass
class HypernetworkFile:
    """A hypernetwork to be written: its modules by width (in the file's order) and metadata."""
    name: str
    layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]]
    structure: Structure
    weight_initialization: str | None
    use_dropout: bool
    step: int = 0
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    optional_info: str | None = None

    def to_bytes(self) -> bytes:
        data: dict = {width: tuple({key: value.detach().float().cpu().clone() for key, value in
                                    module.state_dict().items()} for module in pair)
                      for width, pair in self.layers.items()}
        dropout = list(self.structure.dropout_structure)
        data.update({
            "step": int(self.step), "name": self.name, "layer_structure": list(self.structure.layer_structure),
            "activation_func": self.structure.activation_func, "is_layer_norm": self.structure.add_layer_norm,
            "weight_initialization": self.weight_initialization, "sd_checkpoint": self.sd_checkpoint,
            "sd_checkpoint_name": self.sd_checkpoint_name, "activate_output": self.structure.activate_output,
            "use_dropout": self.use_dropout, "dropout_structure": dropout, "last_layer_dropout": dropout[-2] != 0,
            "optional_info": self.optional_info or None,
        })
        buffer = io.BytesIO()
        torch.save(data, buffer)
        return buffer.getvalue()


def file_hash(content: bytes) -> str:
    """A1111's `Hypernetwork.shorthash()`: the file's sha256, first 10 digits (what its `.optim` records)."""
    return hashlib.sha256(content).hexdigest()[:10]


def save_hypernetwork(hypernetwork: HypernetworkFile, path: Path) -> str:
    """Write the file atomically (a reader, or a full disk, sees the old file or the new one); its hash."""
    content = hypernetwork.to_bytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(Path(path), content)
    return file_hash(content)


def create_hypernetwork(folder: Path, name: str, enable_sizes: list[int], structure: Structure, *,
                        weight_init: str = "Normal", use_dropout: bool = False, overwrite: bool = False) -> Path:
    """A1111's `create_hypernetwork`: new modules (step 0) for each width, initialised as asked, written as
    `<folder>/<name>.pt`; an existing file is kept unless `overwrite`."""
    path = Path(folder) / f"{file_name(name)}.pt"
    if path.exists() and not overwrite:
        raise HypernetworkFileError(f"file {path} already exists (tick 'Overwrite Old Hypernetwork' to replace it)")
    generator = torch.Generator().manual_seed(random.randrange(2 ** 63))
    layers = {}
    for width in enable_sizes:
        pair = []
        for _ in range(2):
            module = sequential(width, structure)
            initialise(module, weight_init, structure.activation_func, generator)
            pair.append(HypernetworkModule(module))
        layers[width] = tuple(pair)
    save_hypernetwork(HypernetworkFile(name=path.stem, layers=layers, structure=structure,
                                       weight_initialization=weight_init, use_dropout=use_dropout), path)
    return path
