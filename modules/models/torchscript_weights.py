"""The weights of a TorchScript archive (what `torch.jit.save` writes, e.g. OpenAI's CLIP `ViT-L-14.pt`), read
without running any of it.

`torch.jit.load` would compile and run the archive's `code/`, and `torch.load(weights_only=True)` refuses the
`__torch__.*` module objects its `data.pkl` pickles. Here `data.pkl` goes through a restricted unpickler: torch's
tensor rebuild, storage types, `collections.OrderedDict` and the TorchScript pickler's list helpers are the only
globals it resolves; every `__torch__.*` class becomes an inert attribute holder; anything else (`os.system`,
`builtins.eval`, ...) refuses the file. Storages come from the zip's `data/<key>` entries. Which attributes of a
module are its parameters and buffers is read as text from the `__parameters__`/`__buffers__` lines of the class in
`code/` (never compiled), so the names are those `torch.jit.load(path).state_dict()` gives.
"""
from __future__ import annotations

import ast
import io
import math
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch

from modules.models.files import ModelFileError
from modules.untrusted import user_files

MAX_PICKLE_BYTES = 64 * 1024 * 1024      # data.pkl holds the object tree, not the tensors
MAX_CODE_BYTES = 16 * 1024 * 1024        # one code/ file
_TORCH_MODULE = re.compile(r"__torch__(\.\w+)*")
_CLASS_LINE = re.compile(r"class (\w+)\b")
_NAMES_LINE = re.compile(r"\s+__(parameters|buffers)__ = (\[.*\])\s*$")


class _Stored(NamedTuple):
    """A storage read from the archive (immutable, so a pickle's BUILD cannot swap what it points at)."""
    data: torch.UntypedStorage
    dtype: torch.dtype


class ScriptObject:
    """A `__torch__.*` object of the pickle: its class's qualified name and the state the pickle gave it."""
    qualified_name = ""

    def __setstate__(self, state):
        self.state = state


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 for storages this reader made; hooks and metadata are dropped."""
    if type(storage) is not _Stored or not isinstance(offset, int) or not _ints(size) or not _ints(stride):
        raise pickle.UnpicklingError("a tensor record that is not torch's")
    # a weights tensor never has more elements than its storage: a stride-0 view of a huge size would cost that
    # much memory as soon as it is copied
    if math.prod(size) > storage.data.nbytes() // storage.dtype.itemsize:
        raise pickle.UnpicklingError(f"a tensor of size {tuple(size)} larger than its storage")
    # set_ checks that the view lies inside the storage
    return torch.empty((0,), dtype=storage.dtype).set_(storage.data, offset, tuple(size), tuple(stride))


def _ints(values) -> bool:
    return isinstance(values, (tuple, list)) and all(isinstance(value, int) for value in values)


def _same(value, *_type_tag):
    """torch.jit._pickle's build_intlist, build_tensorlist, ..., restore_type_tag: the value itself."""
    return value


_ALLOWED = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("collections", "OrderedDict"): dict,   # only ever the (empty) backward-hooks argument
            ("torch", "device"): torch.device,       # a module attribute TorchScript's pickler may write
            **{("torch.jit._pickle", name): _same for name in
               ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag")}}


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, name: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.name = archive, prefix, name
        self.classes: dict[str, type] = {}
        self.storages: dict[str, _Stored] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            try:
                return torch.serialization.StorageType(name)
            except KeyError:
                pass
        if _TORCH_MODULE.fullmatch(module) and name.isidentifier():
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (ScriptObject,), {"qualified_name": qualified})
            return self.classes[qualified]
        raise ModelFileError(f"{self.name}: refused to load: its data.pkl names {module}.{name}, which a weights "
                             "file never needs (it may be malicious)")

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and len(saved_id) == 5 and saved_id[0] == "storage"
                and isinstance(saved_id[1], torch.serialization.StorageType) and isinstance(saved_id[2], str)
                and isinstance(saved_id[4], int) and saved_id[4] >= 0):
            raise pickle.UnpicklingError(f"unknown persistent id {saved_id!r:.80}")
        _, storage_type, key, _location, numel = saved_id
        if key not in self.storages:
            self.storages[key] = _Stored(self._storage_bytes(key, numel * storage_type.dtype.itemsize),
                                         storage_type.dtype)
        return self.storages[key]

    def _storage_bytes(self, key: str, size: int) -> torch.UntypedStorage:
        try:
            info = self.archive.getinfo(f"{self.prefix}data/{key}")
        except KeyError:
            raise pickle.UnpicklingError(f"no data/{key} entry for a tensor") from None
        # torch writes storages uncompressed, so what is read is bounded by the file's size
        if info.compress_type != zipfile.ZIP_STORED or info.file_size < size:
            raise pickle.UnpicklingError(f"data/{key} is compressed or shorter than its tensor")
        if size == 0:
            return torch.UntypedStorage(0)
        with self.archive.open(info) as entry:
            return torch.UntypedStorage.from_buffer(entry.read(size), dtype=torch.uint8)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Each parameter and buffer of the archive's module, named as its `state_dict()` names them; a file that is
    not a TorchScript archive, or whose pickle names anything outside a weights file's needs, is a ModelFileError
    naming it."""
    path = Path(path)
    try:
        with user_files.open_regular(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
            prefix = _archive_prefix(archive, path.name)
            root = _unpickle(archive, prefix, path.name)
            declared = _declared_names(archive, prefix, root)
    except (OSError, zipfile.BadZipFile) as error:
        raise ModelFileError(f"{path.name}: cannot be read as a TorchScript archive ({error})") from None
    if not isinstance(root, ScriptObject) or root.qualified_name not in declared:
        raise ModelFileError(f"{path.name}: not a TorchScript module archive")
    try:
        return dict(_named_tensors(root, "", declared, set()))
    except RecursionError:
        raise ModelFileError(f"{path.name}: refused to load: its modules are nested too deeply") from None


def _archive_prefix(archive: zipfile.ZipFile, name: str) -> str:
    pickles = [entry for entry in archive.namelist() if entry.count("/") == 1 and entry.endswith("/data.pkl")]
    if len(pickles) != 1 or not any(entry.startswith(pickles[0][:-len("data.pkl")] + "code/")
                                    for entry in archive.namelist()):
        raise ModelFileError(f"{name}: not a TorchScript archive (no <name>/data.pkl beside <name>/code/)")
    prefix = pickles[0][:-len("data.pkl")]
    if f"{prefix}byteorder" in archive.namelist() and \
            archive.open(f"{prefix}byteorder").read(16).decode("ascii", "replace") != sys.byteorder:
        raise ModelFileError(f"{name}: its tensors are stored in another byte order than this machine's")
    return prefix


def _unpickle(archive: zipfile.ZipFile, prefix: str, name: str):
    info = archive.getinfo(f"{prefix}data.pkl")
    if info.file_size > MAX_PICKLE_BYTES:
        raise ModelFileError(f"{name}: its data.pkl is over {MAX_PICKLE_BYTES >> 20} MiB")
    with archive.open(info) as entry:
        data = entry.read(MAX_PICKLE_BYTES + 1)
    try:
        return _WeightsUnpickler(data, archive, prefix, name).load()
    except ModelFileError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure inside the pickle is a refusal naming the file
        raise ModelFileError(f"{name}: refused to load: its data.pkl is not a weights pickle "
                             f"({type(error).__name__}: {str(error)[:200]})") from None


def _declared_names(archive: zipfile.ZipFile, prefix: str, root) -> dict[str, list[str]]:
    """Each module class's parameter and buffer names, in that order, from its `code/` source read as text."""
    declared: dict[str, list[str]] = {}
    for qualified in sorted(_qualified_names(root)):
        module, _, class_name = qualified.rpartition(".")
        source = f"{prefix}code/{module.replace('.', '/')}.py"
        try:
            with archive.open(source) as entry:
                text = entry.read(MAX_CODE_BYTES).decode("utf-8", "replace")
        except KeyError:
            continue   # a class without source is not a module with parameters
        names = _class_names(text, class_name)
        if names is not None:
            declared[qualified] = names
    return declared


def _class_names(source: str, class_name: str) -> list[str] | None:
    """The `__parameters__` then `__buffers__` lists of `class <class_name>` in TorchScript's printed source."""
    found: dict[str, list[str]] = {}
    inside = False
    for line in source.splitlines():
        if not line.startswith((" ", "\t")) and line.strip():
            match = _CLASS_LINE.match(line)
            inside = bool(match and match.group(1) == class_name)
        elif inside and (match := _NAMES_LINE.match(line)):
            try:
                names = ast.literal_eval(match.group(2))   # a literal list of strings, never evaluated as code
            except (ValueError, SyntaxError):
                continue
            if isinstance(names, list) and all(isinstance(item, str) for item in names):
                found[match.group(1)] = names
    if "parameters" not in found:
        return None
    return found["parameters"] + found.get("buffers", [])


def _qualified_names(root) -> set[str]:
    seen, pending, names = set(), [root], set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ScriptObject):
            names.add(item.qualified_name)
            pending.append(getattr(item, "state", None))
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return names


def _named_tensors(module: ScriptObject, prefix: str, declared: dict[str, list[str]], seen: set[int]):
    """A module's parameters and buffers, then its sub-modules', as nn.Module.state_dict orders them."""
    state = getattr(module, "state", None)
    if not isinstance(state, dict) or id(module) in seen:   # a pickle can make a module its own child
        return
    seen.add(id(module))
    for name in declared[module.qualified_name]:
        value = state.get(name)
        if isinstance(value, torch.Tensor):   # an unset optional parameter (bias=False) is None
            yield prefix + name, value.detach()
    for name, value in state.items():
        if isinstance(value, ScriptObject) and value.qualified_name in declared:
            yield from _named_tensors(value, f"{prefix}{name}.", declared, seen)
