"""The embeddings folder: scanned, re-read only when a file changes, and which embeddings fit a model.

Which embeddings are usable depends on the model's text-encoder widths (`for_model`); an SD1 embedding on an
SDXL model is skipped with a reason, as A1111 lists it under "skipped".
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from modules.untrusted import user_files
from modules.models.files import ModelFileError
from modules.networks.textual_inversion.files import (EMBEDDING_EXTENSIONS, Embedding, is_preview_image,
                                                      load_embedding)

MAX_VECTORS = 75                # an embedding must fit in one 75-token prompt chunk


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
