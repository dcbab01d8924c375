"""A1111's `modules.sd_hijack` for extensions: the honest parts of `model_hijack`.

A1111 patches its LDM model in place (`hijack`, `undo_hijack`, `clip`, `layers`, …); this web UI runs diffusers'
pipelines unpatched, so those raise `missing_name` naming the extension. What extensions read through it and
the project has:

* `model_hijack.embedding_db`: the textual-inversion embeddings folder (`word_embeddings`: those that fit the
  loaded model, or all without one; `skipped_embeddings`: readable ones made for another model;
  `load_textual_inversion_embeddings()` rescans).
* `model_hijack.get_prompt_lengths(text)`: (tokens, limit) from the project's token counter (`prompts/chunks.py`),
  as the UI's counter shows them ("80/150").
* `model_hijack.optimization_method`: the attention in use ("sdp" or "xformers").
"""
from __future__ import annotations

from modules.addons.missing_names import missing_name
from modules.addons.running import services as _services


class Embedding:
    """A1111's view of one textual-inversion embedding."""

    def __init__(self, embedding):
        self._embedding = embedding
        self.name = embedding.name
        self.filename = str(embedding.path)
        self.step = embedding.step
        self.sd_checkpoint = embedding.sd_checkpoint
        self.sd_checkpoint_name = embedding.sd_checkpoint_name
        self.shape = embedding.shape
        self.vectors = embedding.vector_count
        # SD1/SD2: one [n, width] tensor; SDXL: {"clip_l": …, "clip_g": …}, as A1111's `vec`.
        self.vec = embedding.vectors[""] if "" in embedding.vectors else dict(embedding.vectors)

    def __repr__(self) -> str:
        return f"Embedding({self.name!r}, vectors={self.vectors}, shape={self.shape})"


class EmbeddingDatabase:
    """A1111's `embedding_db` over the project's embeddings folder (read at each use)."""

    def _split(self) -> tuple[dict, dict]:
        from modules.networks.textual_inversion import encoder_widths, fit_problem

        services = _services()
        everything = services.networks.embeddings.all
        model = services.models.current
        widths = encoder_widths(model.pipeline) if model is not None else None
        loaded, skipped = {}, {}
        for name, embedding in everything.items():
            fits = widths is None or fit_problem(embedding, widths) is None
            (loaded if fits else skipped)[name] = Embedding(embedding)
        return loaded, skipped

    @property
    def word_embeddings(self) -> dict[str, Embedding]:
        return self._split()[0]

    @property
    def skipped_embeddings(self) -> dict[str, Embedding]:
        return self._split()[1]

    @property
    def embedding_dirs(self) -> dict:
        folder = _services().networks.embeddings.folder
        return {str(folder): folder}

    def load_textual_inversion_embeddings(self, force_reload: bool = False, sync_with_sd_model: bool = True):
        _services().networks.embeddings.refresh()

    def __getattr__(self, name: str):
        raise missing_name("modules.sd_hijack.model_hijack.embedding_db", name)


class StableDiffusionModelHijack:
    embedding_db = EmbeddingDatabase()

    @property
    def optimization_method(self) -> str:
        return _services().devices.attention

    def get_prompt_lengths(self, text: str) -> tuple[int, int]:
        from modules.prompts import chunks

        return chunks.token_count(text)

    def __getattr__(self, name: str):
        # clip, layers, hijack, undo_hijack, apply_optimizations, comments, extra_generation_params, circular_enabled, …
        raise missing_name("modules.sd_hijack.model_hijack", name,
                           "this web UI runs diffusers' pipelines without patching them; use the script hooks "
                           "and script_callbacks (p.extra_generation_params for infotext)")


model_hijack = StableDiffusionModelHijack()


def __getattr__(name: str):
    # apply_optimizations, undo_optimizations, list_optimizers, EmbeddingsWithFixes, …
    raise missing_name("modules.sd_hijack", name)
