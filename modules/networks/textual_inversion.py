"""Textual-inversion embeddings: find and load the files, pick those that fit the loaded model, and put their
vectors into the text encoder for one forward call — the way A1111 does (`textual_inversion.py`,
`sd_hijack_clip.tokenize_line`, `EmbeddingsWithFixes`), without patching the model.

* A file's embedding is named after its file stem (a PNG embedding after the `name` stored in it); writing that
  name in a prompt (its CLIP tokens, so matching ignores case) replaces those tokens by the embedding's vectors.
* Formats: A1111 `.pt` (`string_to_param`), the original textual-inversion `.pt` (a pickled `ParameterDict`),
  diffusers `learned_embeds.bin`/`.safetensors` (one tensor), A1111 `.safetensors` (`emb_params`), SDXL
  `.safetensors` (`clip_l` + `clip_g`), and PNG images carrying an `sd-ti-embedding` text chunk.
* Pickles are read only through `files.load_object` (weights_only); an unreadable, malicious or foreign file
  is reported as skipped with the reason, never raised and never executed.
* Which embeddings are usable depends on the model's text-encoder widths (`for_model`); an SD1 embedding on an
  SDXL model is skipped with a reason, as A1111 lists it under "skipped".
* The vectors go in through a forward hook on the encoder's token-embedding module that lives only for the
  duration of a `with vectors_inserted(...)` block.
"""
from __future__ import annotations

import base64
import binascii
import functools
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
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
MAX_VECTORS = 75                # an embedding must fit in one 75-token prompt chunk
PLACEHOLDER_ID = 0              # token id A1111 puts where the vectors go ("!"): never BOS/EOS, so pooling is unaffected
PNG_CHUNK = "sd-ti-embedding"   # A1111's PNG text chunk: base64 of JSON, tensors as {"TORCHTENSOR": [[...]]}

Tokenize = Callable[[str], list[int]]


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


# --------------------------------------------------------------------------- which ones fit a model

def encoder_widths(pipeline) -> dict[str, int]:
    """The widths `for_model` needs, read from a loaded diffusers pipeline.

    SD1/SD2: {"": width}; SDXL: {"clip_l": w, "clip_g": w}; SDXL refiner (no first encoder): {"clip_g": w}.
    """
    first = getattr(pipeline, "text_encoder", None)
    second = getattr(pipeline, "text_encoder_2", None)
    if second is None:
        return {SINGLE_KEY: token_embedding_module(first).embedding_dim} if first is not None else {}
    widths = {"clip_g": token_embedding_module(second).embedding_dim}
    if first is not None:
        widths["clip_l"] = token_embedding_module(first).embedding_dim
    return widths


def fit_problem(embedding: Embedding, widths: dict[str, int]) -> str | None:
    """Why the embedding cannot be used with encoders of these widths, or None when it can."""
    if embedding.vector_count > MAX_VECTORS:
        return f"it has {embedding.vector_count} vectors; a prompt chunk holds at most {MAX_VECTORS}"
    if not widths:
        return "the model has no text encoder"
    model = ", ".join(f"{key} {width}" if key else f"width {width}" for key, width in widths.items())
    model = f"this model's text encoder{'s' if len(widths) > 1 else ''} ({model})"
    if not embedding.is_sdxl:
        # As A1111 (one expected shape per model): a single set of vectors serves a single-encoder model only.
        (width,) = widths.values() if len(widths) == 1 else (None,)
        if width == embedding.shape:
            return None
        return f"{embedding.describe()} does not fit {model}"
    for key, width in widths.items():
        vec = embedding.vectors.get(key)
        if vec is None or vec.shape[-1] != width:
            return f"{embedding.describe()} does not fit {model}"
    return None


def _listing_entry(embedding: Embedding) -> dict:
    return {"step": embedding.step, "sd_checkpoint": embedding.sd_checkpoint,
            "sd_checkpoint_name": embedding.sd_checkpoint_name, "shape": embedding.shape,
            "vectors": embedding.vector_count}


class EmbeddingDatabase:
    """The embeddings folder (`--embeddings-dir`): scanned recursively, files re-read only when they change.

    Thread-safe: `refresh` builds new tables and swaps them in; readers see one consistent snapshot.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], Embedding | str | None]] = {}
        self._embeddings: dict[str, Embedding] = {}    # name → embedding, every readable file
        self._errors: dict[str, str] = {}              # name (or relative path) → why the file was skipped
        self._refreshed = False

    # -- scanning

    def _files(self) -> list[Path]:
        found: list[Path] = []
        if not self.folder.is_dir():
            return found
        # Linked folders are not entered (as in every other model folder): a link cannot pull a tree from
        # outside the models root into the scan, nor loop.
        for root, dirs, names in os.walk(self.folder, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in user_files.regular_names(root, names):
                if not name.startswith(".") and name.lower().endswith(EMBEDDING_EXTENSIONS):
                    found.append(Path(root) / name)
        return sorted(found, key=lambda p: p.relative_to(self.folder).as_posix().lower())

    def refresh(self) -> None:
        """Re-scan the folder; unchanged files are not read again (cheap enough to call before each job)."""
        embeddings: dict[str, Embedding] = {}
        errors: dict[str, str] = {}
        cache: dict[Path, tuple[tuple[int, int], Embedding | str | None]] = {}
        with self._lock:
            old_cache = dict(self._cache)
        for path in self._files():
            try:
                stat = path.stat()
            except OSError:
                continue
            if stat.st_size == 0:
                continue
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = old_cache.get(path)
            if cached is not None and cached[0] == stamp:
                result = cached[1]
            elif is_preview_image(path):
                result = None
            else:
                try:
                    result = load_embedding(path)
                except ModelFileError as error:
                    result = str(error)
                except Exception as error:  # noqa: BLE001 - one bad file never stops the scan
                    result = f"{path.name}: {type(error).__name__}: {error}"
            cache[path] = (stamp, result)
            relative = path.relative_to(self.folder).as_posix()
            if result is None:
                continue
            if isinstance(result, str):
                key = path.stem if path.stem not in errors and path.stem not in embeddings else relative
                errors[key] = result
            elif result.name in embeddings:
                errors[relative] = (f"{relative}: another embedding named '{result.name}' was already loaded from "
                                    f"{embeddings[result.name].path.relative_to(self.folder).as_posix()}")
            else:
                embeddings[result.name] = result
        with self._lock:
            self._cache, self._embeddings, self._errors = cache, embeddings, errors
            self._refreshed = True

    def _snapshot(self) -> tuple[dict[str, Embedding], dict[str, str]]:
        if not self._refreshed:
            self.refresh()
        with self._lock:
            return dict(self._embeddings), dict(self._errors)

    @property
    def all(self) -> dict[str, Embedding]:
        """Every readable embedding, whatever model it was made for."""
        return self._snapshot()[0]

    @property
    def errors(self) -> dict[str, str]:
        """Files that could not be read as embeddings, with the reason."""
        return self._snapshot()[1]

    # -- per model

    def for_model(self, widths: dict[str, int]) -> tuple[dict[str, Embedding], dict[str, str]]:
        """(usable name → embedding, skipped name → reason) for a model with text encoders of these widths."""
        embeddings, errors = self._snapshot()
        usable: dict[str, Embedding] = {}
        skipped = dict(errors)
        for name, embedding in embeddings.items():
            problem = fit_problem(embedding, widths)
            if problem is None:
                usable[name] = embedding
            else:
                skipped[name] = problem
        return usable, skipped

    def api_listing(self, widths: dict[str, int] | None) -> dict:
        """GET /sdapi/v1/embeddings: `{"loaded": {name: {...}}, "skipped": {name: {...}}}` as A1111 returns it.

        "skipped" holds readable embeddings that do not fit the model (A1111 lists only those); unreadable files
        are in `errors`. With no model loaded (`widths` None) every readable embedding counts as loaded.
        """
        embeddings, _ = self._snapshot()
        loaded, skipped = {}, {}
        for name, embedding in embeddings.items():
            fits = widths is None or fit_problem(embedding, widths) is None
            (loaded if fits else skipped)[name] = _listing_entry(embedding)
        return {"loaded": loaded, "skipped": skipped}


# --------------------------------------------------------------------------- prompts

def default_tokenize(text: str) -> list[int]:
    from modules.models.tokenizer import clip_tokenizer

    return clip_tokenizer()(text, add_special_tokens=False, truncation=False).input_ids if text else []


@functools.lru_cache(maxsize=8192)
def _name_ids(tokenize: Tokenize, name: str) -> tuple[int, ...]:
    return tuple(tokenize(name))


def name_token_ids(name: str, tokenize: Tokenize | None = None) -> tuple[int, ...]:
    """The prompt tokens that stand for an embedding: its name tokenized without BOS/EOS (cached)."""
    return _name_ids(tokenize or default_tokenize, name)


def find_embeddings_in_tokens(token_ids: list[int], embeddings: dict[str, Embedding],
                              tokenize: Tokenize | None = None) -> list[tuple[int, Embedding]]:
    """(position, embedding) for every embedding name in the token ids, left to right, never overlapping.

    A1111's `find_embedding_at_position`: names are grouped by their first token and tried longest first, so
    "bad-hands-5" wins over "bad" where both match.
    """
    if not embeddings or not token_ids:
        return []
    lookup: dict[int, list[tuple[tuple[int, ...], Embedding]]] = {}
    for name, embedding in embeddings.items():
        ids = name_token_ids(name, tokenize)
        if ids:
            lookup.setdefault(ids[0], []).append((ids, embedding))
    for candidates in lookup.values():
        candidates.sort(key=lambda item: len(item[0]), reverse=True)    # stable: ties keep folder order
    matches: list[tuple[int, Embedding]] = []
    position = 0
    tokens = list(token_ids)
    while position < len(tokens):
        for ids, embedding in lookup.get(tokens[position], ()):
            if tuple(tokens[position:position + len(ids)]) == ids:
                matches.append((position, embedding))
                position += len(ids)
                break
        else:
            position += 1
    return matches


def expand_tokens(token_ids: list[int], matches: list[tuple[int, Embedding]],
                  tokenize: Tokenize | None = None) -> tuple[list[int], list[tuple[int, Embedding]]]:
    """Replace each matched name's tokens by `vector_count` placeholder ids (PLACEHOLDER_ID).

    Returns the new token list and the (position in it, embedding) fixes. `tokenize` must be the one the
    matches were found with (it gives the length of each name).
    """
    out: list[int] = []
    fixes: list[tuple[int, Embedding]] = []
    position = 0
    for start, embedding in sorted(matches, key=lambda match: match[0]):
        if start < position:
            raise ValueError("overlapping embedding matches")
        out += token_ids[position:start]
        fixes.append((len(out), embedding))
        out += [PLACEHOLDER_ID] * embedding.vector_count
        position = start + len(name_token_ids(embedding.name, tokenize))
    out += token_ids[position:]
    return out, fixes


def chunk_expanded_tokens(token_ids: list[int], fixes: list[tuple[int, Embedding]], size: int = 75
                      ) -> list[tuple[list[int], list[tuple[int, Embedding]]]]:
    """Expanded tokens → chunks of at most `size` tokens, (tokens, fixes with offsets in the chunk) each.

    An embedding never straddles two chunks: if its vectors do not fit in what is left of the current chunk,
    the chunk ends early (A1111 pads it) and the embedding starts the next one. Short chunks are returned
    unpadded; the encoder pads them (BOS + tokens + EOS + padding). Always at least one chunk.
    """
    at = dict(fixes)
    chunks: list[tuple[list[int], list[tuple[int, Embedding]]]] = []
    tokens: list[int] = []
    chunk_fixes: list[tuple[int, Embedding]] = []
    position = 0
    while position < len(token_ids):
        embedding = at.get(position)
        width = embedding.vector_count if embedding is not None else 1
        if len(tokens) + width > size and tokens:
            chunks.append((tokens, chunk_fixes))
            tokens, chunk_fixes = [], []
        if embedding is not None:
            chunk_fixes.append((len(tokens), embedding))
        tokens += token_ids[position:position + width]
        position += width
    if tokens or not chunks:
        chunks.append((tokens, chunk_fixes))
    return chunks


def ti_hashes(used: Iterable[Embedding]) -> str:
    """Infotext value of "TI hashes": `name: shorthash, ...` (A1111 drops ':' and ',' from the names)."""
    parts, seen = [], set()
    for embedding in used:
        if embedding.name in seen:
            continue
        seen.add(embedding.name)
        try:
            shorthash = embedding.shorthash()
        except OSError:
            continue
        parts.append(f"{embedding.name.replace(':', '').replace(',', '')}: {shorthash}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- the text encoder

def token_embedding_module(text_encoder) -> torch.nn.Embedding:
    """The token-embedding layer of a transformers CLIP text model (flattened CLIPTextModel, or one with
    `.text_model` such as CLIPTextModelWithProjection)."""
    inner = getattr(text_encoder, "text_model", text_encoder)
    embeddings = getattr(inner, "embeddings", None)
    module = getattr(embeddings, "token_embedding", None)
    if module is None and hasattr(text_encoder, "get_input_embeddings"):
        module = text_encoder.get_input_embeddings()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"{type(text_encoder).__name__} has no token-embedding layer")
    return module


@contextmanager
def vectors_inserted(text_encoder, encoder_key: str, fixes_per_row: list[list[tuple[int, Embedding]]]):
    """For forward calls inside the block, put each embedding's vectors into the token embeddings.

    `fixes_per_row[i]` lists (offset in the chunk, embedding) for batch row i; offsets do not count BOS, so the
    vectors land at offset + 1 onwards (cut at the end of the sequence, as A1111 does). `encoder_key` picks the
    vectors: "" for SD1/SD2, "clip_l" / "clip_g" for SDXL's encoders. The hook is removed on exit; the model
    itself is never changed.
    """
    if not any(fixes_per_row):
        yield
        return
    module = token_embedding_module(text_encoder)

    def hook(_module, _args, output: torch.Tensor) -> torch.Tensor:
        if output.shape[0] != len(fixes_per_row):
            raise ValueError(f"textual inversion: {len(fixes_per_row)} rows of fixes for a batch of "
                             f"{output.shape[0]}")
        output = output.clone()
        for row, fixes in enumerate(fixes_per_row):
            for offset, embedding in fixes:
                vec = embedding.vectors_for(encoder_key)
                if vec is None or vec.shape[-1] != output.shape[-1]:
                    raise ValueError(f"textual inversion: embedding '{embedding.name}' has no vectors of width "
                                     f"{output.shape[-1]} for encoder '{encoder_key or 'text_encoder'}'")
                start = offset + 1
                count = min(output.shape[1] - start, vec.shape[0])
                if count > 0:
                    output[row, start:start + count] = vec[:count].to(device=output.device, dtype=output.dtype)
        return output

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
