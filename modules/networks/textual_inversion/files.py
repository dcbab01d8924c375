"""Textual-inversion files: the embedding, and reading one file of any of the formats A1111 reads.

Formats: A1111 `.pt` (`string_to_param`), the original textual-inversion `.pt` (a pickled `ParameterDict`),
diffusers `learned_embeds.bin`/`.safetensors` (one tensor), A1111 `.safetensors` (`emb_params`), SDXL
`.safetensors` (`clip_l` + `clip_g`), and PNG images carrying an `sd-ti-embedding` text chunk. Pickles are read
only through `files.load_object` (weights_only); an unreadable, malicious or foreign file raises ModelFileError
naming the reason, and is never executed.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modules.untrusted import json_file, user_files
from modules.models.hashes import file_sha256
from modules.models import files
from modules.models.files import ModelFileError

EMBEDDING_EXTENSIONS = (".pt", ".bin", ".safetensors", ".png")
SDXL_KEYS = ("clip_l", "clip_g")
SINGLE_KEY = ""                 # vectors of an SD1/SD2-style file, usable by one encoder of the right width
PNG_CHUNK = "sd-ti-embedding"   # A1111's PNG text chunk: base64 of JSON, tensors as {"TORCHTENSOR": [[...]]}


# --------------------------------------------------------------------------- the embedding

@dataclass
class Embedding:
    name: str                                   # the word(s) that trigger it in a prompt
    vectors: dict[str, torch.Tensor]            # "" → [n, width]; or "clip_l"/"clip_g" → [n, width] (SDXL)
    path: Path
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    sha256: str | None = field(default=None, repr=False)    # of the whole file, computed on first use

    @property
    def vector_count(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def is_sdxl(self) -> bool:
        return SINGLE_KEY not in self.vectors

    @property
    def shape(self) -> int:
        """A1111's `shape`: the vector width, summed over both encoders for SDXL files (768 + 1280 = 2048)."""
        return sum(vec.shape[-1] for vec in self.vectors.values())

    def vectors_for(self, encoder_key: str) -> torch.Tensor | None:
        """The [n, width] vectors for one text encoder ("" / "clip_l" / "clip_g"), or None."""
        found = self.vectors.get(encoder_key)
        return found if found is not None else self.vectors.get(SINGLE_KEY)

    def shorthash(self) -> str:
        """First 12 hex digits of the file's sha256: A1111's "TI hashes" value."""
        if self.sha256 is None:
            self.sha256 = file_sha256(self.path)
        return self.sha256[:12]

    def describe(self) -> str:
        if self.is_sdxl:
            widths = ", ".join(f"{key} {vec.shape[-1]}" for key, vec in self.vectors.items())
            return f"an SDXL embedding ({widths})"
        return f"an SD1/SD2-style embedding of width {self.shape}"


# --------------------------------------------------------------------------- loading one file

def load_embedding(path: str | Path) -> Embedding:
    """Read one embedding file; raises ModelFileError naming the file and the reason for anything else.

    A PNG without an embedding in it (a preview image) raises ModelFileError too; the database leaves those
    out silently (`is_preview_image`).
    """
    path = Path(path)
    name = path.stem
    if path.suffix.lower() == ".png":
        data = _read_png_embedding(path)
        if isinstance(data.get("name"), str) and data["name"].strip():
            name = data["name"].strip()
    else:
        data = files.load_object(path)   # the allowlist includes ParameterDict (original TI files)
    try:
        vectors = _vectors_from(data)
    except (ValueError, TypeError) as error:
        raise ModelFileError(f"{path.name}: {error}") from None
    return Embedding(name=name, vectors=vectors, path=path, step=_as_int(data.get("step")),
                     sd_checkpoint=_as_text(data.get("sd_checkpoint")),
                     sd_checkpoint_name=_as_text(data.get("sd_checkpoint_name")))


def is_preview_image(path: Path) -> bool:
    """A PNG in the embeddings folder that carries no embedding (A1111 shows those as card previews)."""
    if path.suffix.lower() != ".png":
        return False
    if path.stem.lower().endswith(".preview"):
        return True
    try:
        from PIL import Image

        with user_files.open_regular(path) as handle, Image.open(handle) as image:
            return PNG_CHUNK not in image.info
    except Exception:  # noqa: BLE001 - not even an image: not ours to report
        return True


def _read_png_embedding(path: Path) -> dict:
    from PIL import Image

    try:
        with user_files.open_regular(path) as handle, Image.open(handle) as image:
            # A1111 writes the text chunk before the pixels, so `info` has it without decoding the image.
            encoded = image.info.get(PNG_CHUNK)
    except Exception as error:  # noqa: BLE001
        raise ModelFileError(f"{path.name}: not a readable PNG image ({error})") from None
    if not encoded:
        raise ModelFileError(f"{path.name}: a PNG without an embedding in it (no '{PNG_CHUNK}' text chunk)")
    try:
        data = json_file.parse(base64.b64decode(encoded), object_hook=_tensor_from_json)
    except (binascii.Error, ValueError, TypeError) as error:
        raise ModelFileError(f"{path.name}: the '{PNG_CHUNK}' chunk is not valid base64 JSON ({error})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path.name}: the '{PNG_CHUNK}' chunk does not hold an embedding")
    return data


def _tensor_from_json(obj: dict):
    if "TORCHTENSOR" in obj:
        return torch.tensor(obj["TORCHTENSOR"], dtype=torch.float32)
    return obj


def _vectors_from(data) -> dict[str, torch.Tensor]:
    """The vectors of a loaded file, by format (A1111 `create_embedding_from_data`); ValueError otherwise."""
    if not isinstance(data, dict) or not data:
        raise ValueError("not a textual-inversion embedding (the file holds no dictionary of tensors)")
    if "string_to_param" in data:                                # A1111 / original textual inversion
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)          # a pickled ParameterDict
        if not isinstance(params, dict) or len(params) != 1:
            count = len(params) if isinstance(params, dict) else 0
            raise ValueError(f"'string_to_param' must hold exactly one tensor, it holds {count}")
        return {SINGLE_KEY: _matrix(next(iter(params.values())), "string_to_param")}
    if all(key in data for key in SDXL_KEYS):                    # SDXL: one set of vectors per text encoder
        vectors = {key: _matrix(data[key], key) for key in SDXL_KEYS}
        counts = {key: vec.shape[0] for key, vec in vectors.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"clip_l has {counts['clip_l']} vectors but clip_g has {counts['clip_g']}")
        return vectors
    tensors = {key: value for key, value in data.items() if isinstance(value, torch.Tensor)}
    if len(tensors) == 1 and len(data) == 1:                     # diffusers concept, A1111 'emb_params'
        key, value = next(iter(tensors.items()))
        return {SINGLE_KEY: _matrix(value, str(key))}
    if tensors:
        shown = ", ".join(sorted(map(str, tensors))[:5])
        raise ValueError(f"not a textual-inversion embedding: {len(tensors)} tensors ({shown}…) where one is "
                         "expected (is it a LoRA or a checkpoint?)")
    raise ValueError("not a textual-inversion embedding: no 'string_to_param', 'clip_l'/'clip_g' or single tensor")


def _matrix(value, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"'{what}' is not a tensor")
    if not value.is_floating_point():
        raise ValueError(f"'{what}' has dtype {value.dtype}, not floating point")
    vec = value.detach().to("cpu", torch.float32)
    if vec.ndim == 1:
        vec = vec.unsqueeze(0)
    if vec.ndim != 2 or vec.shape[0] == 0 or vec.shape[1] == 0:
        raise ValueError(f"'{what}' has shape {tuple(value.shape)}; expected [vectors, width]")
    return vec.contiguous()


def _as_int(value) -> int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    return None


def _as_text(value) -> str | None:
    return None if value is None or isinstance(value, torch.Tensor) else str(value)
