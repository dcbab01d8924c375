"""Reading model files safely: by content, never by extension, and never running pickled code.

safetensors files go through the safetensors library. Pickle-based files (.ckpt, .pt, .pth, .bin) are
read only with `torch.load(..., weights_only=True)` plus a narrow allowlist of the few harmless globals
that old Stable Diffusion checkpoints reference. There is no unsafe fallback, by design.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch

from modules.untrusted import json_file, user_files

# Taken at import, before any extension can replace torch.load: every pickle read goes through this
# reference, so a monkey-patched torch.load (as A1111 extensions do) can never widen what we accept.
_TORCH_LOAD = torch.serialization.load

SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors format's own limit


class ModelFileError(Exception):
    """A model file that cannot be read; the message names the file and the reason."""


class _LightningModelCheckpoint:
    """Stand-in for pytorch_lightning's ModelCheckpoint callback, pickled into old SD .ckpt files.

    It carries only training bookkeeping; giving it an inert class lets weights_only loading accept it.
    """

    def __setstate__(self, state):
        self.__dict__["state"] = state


# The allowlist: (object to build, name as it appears in the pickle). Same set as ComfyUI's.
_SAFE_GLOBALS = [
    (_LightningModelCheckpoint, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    np._core.multiarray.scalar,
    np.dtype,
    (np.dtype, "numpy.dtype"),
    torch.nn.ParameterDict,      # the original textual-inversion .pt files pickle one
    *(type(np.dtype(name)) for name in ("float64", "float32", "float16", "int64", "int32")),
]
try:
    import _codecs

    _SAFE_GLOBALS.append(_codecs.encode)
except ImportError:  # pragma: no cover - _codecs is always built in
    pass


def file_kind(path: Path) -> str:
    """'safetensors' or 'pickle', decided from the file's first bytes; raises ModelFileError otherwise."""
    try:
        with user_files.open_regular(path, "rb") as handle:
            head = handle.read(9)
    except OSError as error:
        raise ModelFileError(f"{path.name}: cannot be read ({error.strerror or error})") from None
    if len(head) == 0:
        raise ModelFileError(f"{path.name}: the file is empty")
    # safetensors first: a header length whose low byte is 0x80 (one file in 256) looks like a pickle PROTO.
    # Taking a pickle for safetensors is harmless (the safetensors parser runs no code); the reverse refused
    # good files.
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "pickle"
    raise ModelFileError(f"{path.name}: not a safetensors or PyTorch checkpoint file")


def read_safetensors_header(path: Path) -> dict:
    """The parsed JSON header of a safetensors file, checked for size before anything big is read."""
    try:
        handle = user_files.open_regular(path, "rb")
    except OSError as error:
        raise ModelFileError(f"{path.name}: cannot be read ({error.strerror or error})") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        raw = handle.read(8)
        if len(raw) < 8:
            raise ModelFileError(f"{path.name}: truncated safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > SAFETENSORS_MAX_HEADER:
            raise ModelFileError(f"{path.name}: safetensors header of {length} bytes is over the 100 MB limit")
        if 8 + length > size:
            raise ModelFileError(f"{path.name}: safetensors header runs past the end of the file")
        try:
            header = json_file.parse(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise ModelFileError(f"{path.name}: safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path.name}: safetensors header is not a JSON object")
    return header


def check_readable(path: Path) -> None:
    """The cheap checks of a model file (its kind, and a safetensors header): ModelFileError naming what is wrong."""
    if file_kind(path) == "safetensors":
        read_safetensors_header(path)


def read_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (empty for pickles), without loading tensors."""
    if file_kind(path) != "safetensors":
        return {}
    metadata = read_safetensors_header(path).get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint file on the CPU, nested `state_dict` unwrapped."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "safetensors":
        read_safetensors_header(path)
        try:
            return safetensors.torch.load_file(str(path), device="cpu")
        except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise ModelFileError(f"{path.name}: damaged safetensors file ({error})") from None
    return _load_pickle(path)


def load_object(path: str | Path):
    """The whole object stored in a small weights file (textual-inversion .pt, hypernetwork .pt, .bin), read safely.

    safetensors files give their tensors as a dict; pickles may hold nested dicts, lists, numbers and strings
    around the tensors, but only what `weights_only=True` allows.
    """
    path = Path(path)
    if file_kind(path) == "safetensors":
        return load_state_dict(path)
    return _unpickle(path)


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    data = _unpickle(path)
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelFileError(f"{path.name}: does not contain a state dict")
    return {key: value for key, value in data.items() if isinstance(value, torch.Tensor)}


def _unpickle(path: Path):
    with torch.serialization.safe_globals(_SAFE_GLOBALS):
        try:
            # mmap needs the zip format; older files fall back to a plain read, still weights-only.
            try:
                data = _TORCH_LOAD(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error) and "zip" not in str(error):
                    raise
                data = _TORCH_LOAD(str(path), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure is a refusal, never a retry
            reason = str(error).strip().splitlines()
            detail = next((line for line in reason if "GLOBAL" in line or "Unsupported" in line), reason[0] if reason else "")
            # torch goes on to suggest allowlisting the global: not advice to pass on about an untrusted file.
            detail = detail.split(" Please use `torch.serialization")[0].removeprefix("\tWeightsUnpickler error: ")
            raise ModelFileError(
                f"{path.name}: refused to load: the file needs code that is not allowed in a weights file "
                f"(it may be malicious, or it is not a checkpoint). {detail}"
            ) from None
    return data
