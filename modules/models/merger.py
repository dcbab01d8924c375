"""The Checkpoint Merger (A1111 `extras.run_modelmerger`): two or three checkpoints → one new .safetensors file.

* Weighted sum: A * (1 - M) + B * M; Add difference: A + (B - C) * M; No interpolation: A alone (to convert
  to fp16, bake in a VAE or drop weights).
* As in A1111, the result has A's keys: a key missing in B (or C) keeps A's value, and so do keys without
  "model" in their name (the DDPM schedule buffers) and the CLIP `position_ids` index tables. An inpainting
  (9-channel) or instruct-pix2pix (8-channel) A merges the first 4 input channels of its UNet input conv
  with B's; any other shape mismatch is an error naming the key.
* Streaming: safetensors inputs are read one tensor at a time (memory-mapped) and each result tensor is
  written as soon as it is computed, so the merge's own memory is a few tensors, not a checkpoint (two
  750 MB inputs: +60 MB). The inputs' pages read through the mapping count in the process's RSS as file
  cache, which the system takes back when it needs the memory. Pickled (.ckpt) inputs cannot be read in
  parts: each is loaded whole, weights-only.
* The file is written under a temporary name in the checkpoint folder and renamed when complete, so a
  failure or an interrupt never leaves a half-written checkpoint in the list.

Only safetensors output: a pickled checkpoint is a file that can carry code, which this project never writes.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors
import torch

from modules.untrusted import json_file
from modules.models import files
from modules.networks import vae as vae_module
from modules.untrusted.user_regex import UserPattern

if TYPE_CHECKING:
    from modules.jobs import Job
    from modules.models.registry import CheckpointInfo, CheckpointRegistry
    from modules.networks.vae import VaeRegistry

# A1111's labels, used in the UI and written into the merge recipe.
NO_INTERPOLATION, WEIGHTED_SUM, ADD_DIFFERENCE = "No interpolation", "Weighted sum", "Add difference"
METHODS = (NO_INTERPOLATION, WEIGHTED_SUM, ADD_DIFFERENCE)
# A1111's "Copy config from" choices; the recipe stores the index.
CONFIG_SOURCES = ("A, B or C", "B", "C", "Don't")
NO_VAE = "None"

INPUT_CONV = "model.diffusion_model.input_blocks.0.0.weight"
EXTENSION = ".safetensors"
MAX_FILENAME_BYTES = 255
DISCARD_MATCH_SECONDS = 5.0   # for every key of every model together

# safetensors' dtype codes (the format's header strings).
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
          "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
DTYPE_CODES = {dtype: code for code, dtype in DTYPES.items()}


@dataclass(frozen=True)
class MergeRequest:
    """The Checkpoint Merger form. Model names are titles, names or hashes, matched against the registry."""
    primary: str
    secondary: str = ""
    tertiary: str = ""
    method: str = WEIGHTED_SUM
    multiplier: float = 0.3
    save_as_half: bool = False
    custom_name: str = ""
    config_source: int = 0           # index into CONFIG_SOURCES
    bake_in_vae: str = NO_VAE        # a VAE name from the VAE registry
    discard_weights: str = ""        # regular expression; matching keys are left out
    save_metadata: bool = True
    add_merge_recipe: bool = True
    copy_metadata_fields: bool = True
    metadata_json: str = "{}"        # user metadata, a JSON object merged into the file's metadata
    overwrite: bool = False          # A1111 always overwrites; here a file of the same name is kept unless asked


@dataclass
class _Entry:
    """One tensor of the result: where it comes from, and its shape and dtype in the file."""
    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    how: str                         # "copy" (A's), "merge", "merge-channels" (first channels), "vae"

    @property
    def nbytes(self) -> int:
        return self.dtype.itemsize * int(torch.Size(self.shape).numel())


class _Checkpoint:
    """One input's tensors: safetensors read lazily, one tensor at a time; a pickle loaded whole (weights only)."""

    def __init__(self, info: CheckpointInfo, role: str, stack: contextlib.ExitStack):
        self.info, self.role = info, role
        path = Path(info.filename)
        self._file = self._tensors = None
        try:
            if files.file_kind(path) == "safetensors":
                files.read_safetensors_header(path)   # the size checks, before the library parses it
                self._file = stack.enter_context(safetensors.safe_open(str(path), framework="pt", device="cpu"))
                self.keys = list(self._file.keys())
            else:
                self._tensors = files.load_state_dict(path)
                self.keys = list(self._tensors)
        except files.ModelFileError as error:
            raise ValueError(f"{role}: {error}") from None
        except (safetensors.SafetensorError, OSError) as error:
            raise ValueError(f"{role}: {path.name}: cannot be read ({error})") from None
        self._key_set = set(self.keys)

    def __contains__(self, key: str) -> bool:
        return key in self._key_set

    def shape(self, key: str) -> tuple[int, ...]:
        if self._tensors is not None:
            return tuple(self._tensors[key].shape)
        return tuple(self._file.get_slice(key).get_shape())

    def dtype(self, key: str) -> torch.dtype:
        if self._tensors is not None:
            return self._tensors[key].dtype
        code = self._file.get_slice(key).get_dtype()
        if code not in DTYPES:
            raise ValueError(f"{self.role}: {key} has the unsupported dtype {code}")
        return DTYPES[code]

    def get(self, key: str) -> torch.Tensor:
        return self._tensors[key] if self._tensors is not None else self._file.get_tensor(key)


def _raw_metadata(info: CheckpointInfo) -> dict[str, str]:
    try:
        return files.read_metadata(Path(info.filename))
    except (files.ModelFileError, OSError) as error:
        raise ValueError(f"{info.name}: cannot read its metadata ({error})") from None


def read_metadata(info: CheckpointInfo) -> dict:
    """A checkpoint's safetensors metadata, JSON-object values parsed (A1111 `read_metadata_from_safetensors`)."""
    parsed = {}
    for key, value in _raw_metadata(info).items():
        if value.startswith("{"):
            with contextlib.suppress(ValueError):
                value = json_file.parse(value)
        parsed[key] = value
    return parsed


def selected_metadata(registry: CheckpointRegistry, names: list[str]) -> dict:
    """A1111's "Read metadata from selected checkpoints": the metadata of each named checkpoint, merged."""
    metadata = {}
    for name in names:
        info = registry.find(name) if name else None
        if info is not None:
            metadata.update(read_metadata(info))
    return metadata


# ---------------------------------------------------------------- checking the request

def _model(registry: CheckpointRegistry, name: str, label: str, method: str) -> CheckpointInfo:
    if not (name or "").strip():
        raise ValueError(f"{label}: required for {method}")
    info = registry.find(name)
    if info is None:
        raise ValueError(f"{label}: unknown checkpoint {name!r}; press 🔄 to rescan the checkpoint folder")
    return info


def output_stem(custom_name: str) -> str:
    """The checked custom name without extension; ValueError when it could become a path or a hidden/VAE file."""
    name = (custom_name or "").strip()
    if name.lower().endswith(EXTENSION):
        name = name[: -len(EXTENSION)].rstrip()
    if not name:
        raise ValueError("Custom Name: empty")
    if "/" in name or "\\" in name or ".." in name or any(ord(char) < 32 for char in name):
        raise ValueError(f"Custom Name: {custom_name!r} must be a plain file name (no folders, no '..')")
    if name.startswith("."):
        raise ValueError(f"Custom Name: {custom_name!r} must not start with '.'")
    if ".vae" in name.lower():   # "<x>.vae.<y>" files are VAEs to the checkpoint list, which would not show it
        raise ValueError(f"Custom Name: {custom_name!r} must not contain '.vae'")
    return name


def _default_stem(method: str, multiplier: float, a: CheckpointInfo, b, c) -> str:
    """A1111's file names: "0.7(A) + 0.3(B)", "A + 0.3(B - C)", or A's name."""
    if method == WEIGHTED_SUM:
        return f"{round(1 - multiplier, 2)}({a.model_name}) + {round(multiplier, 2)}({b.model_name})"
    if method == ADD_DIFFERENCE:
        return f"{a.model_name} + {round(multiplier, 2)}({b.model_name} - {c.model_name})"
    return a.model_name


def _discard_pattern(text: str) -> UserPattern | None:
    """Matched against every key of every model, with a time limit for them all (a pattern that backtracks without
    end must not hold the worker)."""
    if not (text or "").strip():
        return None
    return UserPattern(text, "Discard weights with matching name", budget=DISCARD_MATCH_SECONDS)


def _user_metadata(text: str) -> dict[str, str]:
    """The "Metadata in JSON format" box: a JSON object; values that are not strings are stored as JSON."""
    if not (text or "").strip():
        return {}
    try:
        data = json_file.parse(text)
    except ValueError as error:
        raise ValueError(f"Metadata in JSON format: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError("Metadata in JSON format: must be a JSON object ({...})")
    return {str(key): _metadata_value(value) for key, value in data.items() if value is not None}


def _metadata_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _vae_weights(vaes: VaeRegistry, name: str) -> dict[str, torch.Tensor]:
    """The VAE to bake in, keyed as inside a checkpoint (`first_stage_model.*`), whatever its file's layout."""
    info = vaes.find(name)
    if info is None:
        raise ValueError(f"Bake in VAE: unknown VAE {name!r}; choose one of {vaes.names()}")
    try:
        return vae_module.to_checkpoint_layout(files.load_state_dict(info.path), info.name)
    except (files.ModelFileError, vae_module.VaeLoadError) as error:
        raise ValueError(f"Bake in VAE: {error}") from None


# ---------------------------------------------------------------- planning: every shape checked before writing

def _mergeable(key: str, sources: list[_Checkpoint]) -> bool:
    """Keys A1111 merges: those of the model (not the schedule buffers) present in every input, except CLIP's
    position_ids (an index table), and only floating-point tensors."""
    return ("model" in key and not key.endswith("position_ids") and all(key in source for source in sources)
            and all(source.dtype(key).is_floating_point for source in sources))


def _half(dtype: torch.dtype, save_as_half: bool) -> torch.dtype:
    return torch.float16 if save_as_half and dtype == torch.float32 else dtype   # A1111 `to_half`


def _plan(a: _Checkpoint, others: list[_Checkpoint], vae: dict[str, torch.Tensor], discard: UserPattern | None,
          save_as_half: bool) -> tuple[list[_Entry], str]:
    """The result's tensors in order, and what the result is ("", "inpainting" or "instruct-pix2pix")."""
    entries, kind = [], ""
    for key in a.keys:
        if discard is not None and discard.search(key):
            continue
        shape = a.shape(key)
        if key in vae:
            if tuple(vae[key].shape) != shape:
                raise ValueError(f"Bake in VAE: {key} has shape {tuple(vae[key].shape)}, the model's has {shape}; "
                                 "the VAE does not fit this model")
            entries.append(_Entry(key, shape, _half(a.dtype(key), save_as_half), "vae"))
            continue
        if not others or not _mergeable(key, [a, *others]):
            entries.append(_Entry(key, shape, _half(a.dtype(key), save_as_half), "copy"))
            continue
        b_shape = others[0].shape(key)
        for other in others[1:]:
            if other.shape(key) != b_shape:
                raise ValueError(f"cannot merge {key}: {others[0].role} has shape {b_shape}, "
                                 f"{other.role} has {other.shape(key)}")
        how = "merge"
        if shape != b_shape:
            how, kind = "merge-channels", _channel_merge_kind(key, shape, b_shape, others[0].role)
        dtype = a.dtype(key)
        for other in others:
            dtype = torch.promote_types(dtype, other.dtype(key))
        entries.append(_Entry(key, shape, _half(dtype, save_as_half), how))
    for key, tensor in vae.items():   # a model without VAE weights gets the whole VAE
        if key not in a and not (discard is not None and discard.search(key)):
            entries.append(_Entry(key, tuple(tensor.shape), _half(tensor.dtype, save_as_half), "vae"))
    if others and not any(entry.how.startswith("merge") for entry in entries):
        raise ValueError(f"{others[0].role}: shares no weights with Primary model (A); nothing to merge")
    for entry in entries:
        if entry.dtype not in DTYPE_CODES:
            raise ValueError(f"{entry.key}: tensors of type {entry.dtype} cannot be saved in a safetensors file")
    return entries, kind


def _channel_merge_kind(key: str, a_shape: tuple, b_shape: tuple, b_role: str) -> str:
    """An inpainting (9) or instruct-pix2pix (8 input channels) A merged with an ordinary (4-channel) B."""
    same_elsewhere = len(a_shape) == len(b_shape) == 4 and a_shape[:1] + a_shape[2:] == b_shape[:1] + b_shape[2:]
    if key == INPUT_CONV and same_elsewhere:
        if a_shape[1] in (8, 9) and b_shape[1] == 4:
            return "inpainting" if a_shape[1] == 9 else "instruct-pix2pix"
        if a_shape[1] == 4 and b_shape[1] in (8, 9):
            raise ValueError("When merging an inpainting or instruct-pix2pix model with a normal one, "
                             "A must be the inpainting or instruct-pix2pix model")
    raise ValueError(f"cannot merge {key}: Primary model (A) has shape {a_shape}, {b_role} has {b_shape}; "
                     "are the models of the same family (SD 1.x, SD 2.x, SDXL)?")


# ---------------------------------------------------------------- computing and writing

def _combine(method: str, multiplier: float, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None):
    if method == WEIGHTED_SUM:
        return a * (1 - multiplier) + b * multiplier
    return a + (b - c) * multiplier


def _tensor(entry: _Entry, request: MergeRequest, a: _Checkpoint, others: list[_Checkpoint], vae: dict):
    if entry.how == "vae":
        return vae[entry.key].to(entry.dtype)
    if entry.how == "copy":
        return a.get(entry.key).to(entry.dtype)
    work = torch.promote_types(entry.dtype, torch.float32)   # fp16 inputs are merged in fp32
    tensor_a = a.get(entry.key).to(work)
    b, *c = (other.get(entry.key).to(work) for other in others)
    c = c[0] if c else None
    if entry.how == "merge":
        return _combine(request.method, request.multiplier, tensor_a, b, c).to(entry.dtype)
    channels = b.shape[1]
    tensor_a = tensor_a.clone()   # a pickled input's tensor is not ours to change
    tensor_a[:, :channels] = _combine(request.method, request.multiplier, tensor_a[:, :channels], b, c)
    return tensor_a.to(entry.dtype)


def _write_safetensors(handle, entries: list[_Entry], metadata: dict[str, str], produce, job: Job | None) -> bool:
    """Write a safetensors file tensor by tensor; False when the job was interrupted.

    Written by hand because the safetensors library only saves a dict of tensors that are all in memory (its
    maintainers decline streaming writes: safetensors issues #291, #531). The format is small: an 8-byte
    little-endian header length, the JSON header (padded with spaces to a multiple of 8, as the library does),
    then each tensor's bytes, little-endian (the byte order of every machine torch runs on here), in header order.
    """
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for entry in entries:
        header[entry.key] = {"dtype": DTYPE_CODES[entry.dtype], "shape": list(entry.shape),
                             "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    handle.write(len(text).to_bytes(8, "little"))
    handle.write(text)
    for index, entry in enumerate(entries):
        if job is not None:
            if job.interrupted:
                return False
            job.set_progress(index, len(entries))
        tensor = produce(entry).contiguous()
        if tensor.numel():
            handle.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
    if job is not None:
        job.set_progress(len(entries), len(entries))
    return True


def _metadata(request: MergeRequest, a: CheckpointInfo, b, c, kind: str, registry: CheckpointRegistry,
              user: dict[str, str]) -> dict[str, str]:
    """A1111's metadata: the inputs' own (optional), the user's JSON, "format", and the merge recipe."""
    if not request.save_metadata:
        return {}
    inputs = [info for info in (a, b, c) if info is not None]
    metadata = {}
    if request.copy_metadata_fields:
        for info in inputs:
            metadata.update(_raw_metadata(info))
    metadata.update(user)
    metadata["format"] = "pt"
    if request.add_merge_recipe:
        for info in inputs:
            registry.ensure_hash(info)
        recipe = {"type": "webui", "primary_model_hash": a.sha256,
                  "secondary_model_hash": b.sha256 if b else None, "tertiary_model_hash": c.sha256 if c else None,
                  "interp_method": request.method, "multiplier": request.multiplier,
                  "save_as_half": request.save_as_half, "custom_name": request.custom_name,
                  "config_source": request.config_source, "bake_in_vae": request.bake_in_vae,
                  "discard_weights": request.discard_weights, "is_inpainting": kind == "inpainting",
                  "is_instruct_pix2pix": kind == "instruct-pix2pix"}
        models = {}
        for info in inputs:
            own = read_metadata(info)
            # keyed by sha256 (A1111); with --no-hashing there is none and the legacy hash stands in
            models[info.sha256 or info.oldhash] = {"name": info.name, "legacy_hash": info.oldhash,
                                                   "sd_merge_recipe": own.get("sd_merge_recipe")}
            if isinstance(own.get("sd_merge_models"), dict):
                models.update(own["sd_merge_models"])
        metadata["sd_merge_recipe"] = json.dumps(recipe, ensure_ascii=False)
        metadata["sd_merge_models"] = json.dumps(models, ensure_ascii=False)
    return metadata


def _config_to_copy(source: int, a: CheckpointInfo, b, c) -> Path | None:
    """The `<name>.yaml` of A, B or C (the first that has one), of B, of C, or none (A1111 `create_config`)."""
    candidates = {0: (a, b, c), 1: (b,), 2: (c,)}.get(source, ())
    return next((info.sidecar_yaml for info in candidates if info is not None and info.sidecar_yaml.is_file()),
                None)


def _copy_atomically(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def merge(request: MergeRequest, registry: CheckpointRegistry, vaes: VaeRegistry,
          job: Job | None = None) -> Path | None:
    """Merge as asked and write `<name>.safetensors` into the checkpoint folder; its path, or None if interrupted.

    Bad input (a missing model, a bad name, regex or JSON, shapes that do not fit) raises ValueError before
    anything is written; a failed write (disk full) raises OSError and leaves nothing behind.
    """
    method = request.method
    if method not in METHODS:
        raise ValueError(f"Interpolation Method: {method!r} is not one of {list(METHODS)}")
    multiplier = float(request.multiplier)
    if not 0.0 <= multiplier <= 1.0:
        raise ValueError(f"Multiplier (M): {request.multiplier} is not between 0 and 1")
    if request.config_source not in range(len(CONFIG_SOURCES)):
        raise ValueError(f"Copy config from: {request.config_source!r} is not one of 0..{len(CONFIG_SOURCES) - 1}")
    a = _model(registry, request.primary, "Primary model (A)", method)
    b = _model(registry, request.secondary, "Secondary model (B)", method) if method != NO_INTERPOLATION else None
    c = _model(registry, request.tertiary, "Tertiary model (C)", method) if method == ADD_DIFFERENCE else None
    custom = output_stem(request.custom_name) if (request.custom_name or "").strip() else None
    discard = _discard_pattern(request.discard_weights)
    user_metadata = _user_metadata(request.metadata_json) if request.save_metadata else {}
    bake = (request.bake_in_vae or NO_VAE).strip() or NO_VAE
    vae = _vae_weights(vaes, bake) if bake != NO_VAE else {}

    with contextlib.ExitStack() as stack:
        _say(job, "Reading the models")
        source_a = _Checkpoint(a, "Primary model (A)", stack)
        others = [_Checkpoint(info, label, stack) for info, label in
                  ((b, "Secondary model (B)"), (c, "Tertiary model (C)")) if info is not None]
        entries, kind = _plan(source_a, others, vae, discard, request.save_as_half)

        stem = custom or _default_stem(method, multiplier, a, b, c)
        filename = stem + (f".{kind}" if kind else "") + EXTENSION
        if len(filename.encode("utf-8")) > MAX_FILENAME_BYTES:
            raise ValueError(f"Custom Name: the file name {filename!r} is too long; choose a shorter name")
        target = Path(registry.folder) / filename
        if target.exists() and not request.overwrite:
            raise ValueError(f"Custom Name: {filename} already exists in the checkpoint folder; choose another "
                             "name or tick \"Overwrite existing file\"")
        # Another checkpoint with this stem (v2.ckpt) owns <stem>.yaml: writing or keeping one here would change it.
        namesakes = [path.name for path in target.parent.glob(f"{glob.escape(target.stem)}.*")
                     if path.stem == target.stem and path != target
                     and path.suffix.lower() in (".ckpt", ".pt", ".pth", ".bin", ".safetensors")]
        if namesakes:
            raise ValueError(f"Custom Name: {namesakes[0]} already uses the name {target.stem!r} (and its .yaml "
                             "config); choose another name")
        config = _config_to_copy(request.config_source, a, b, c)
        if request.save_metadata and request.add_merge_recipe:
            _say(job, "Hashing the models")
        metadata = _metadata(request, a, b, c, kind, registry, user_metadata)

        _say(job, {NO_INTERPOLATION: "Converting A", WEIGHTED_SUM: "Merging A and B",
                   ADD_DIFFERENCE: "Merging A, B and C"}[method])
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".merging-", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                finished = _write_safetensors(
                    handle, entries, metadata, lambda entry: _tensor(entry, request, source_a, others, vae), job)
                if finished:
                    _say(job, "Saving")
                    handle.flush()
                    os.fsync(handle.fileno())
            if finished:
                with safetensors.safe_open(tmp, framework="pt"):   # header and size agree: the file is whole
                    pass
                if config is not None:
                    _copy_atomically(config, target.with_suffix(".yaml"))
                else:   # an overwritten model's own config must not describe the new one
                    target.with_suffix(".yaml").unlink(missing_ok=True)
                os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)   # gone already after the rename
    if not finished:
        return None
    _say(job, "Checkpoint saved")
    return target


def _say(job: Job | None, text: str) -> None:
    if job is not None:
        job.textinfo = text
