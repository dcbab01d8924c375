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

The package: `files` (the embedding, reading one file), `database` (the folder, what fits a model), `tokens`
(names in a prompt's tokens → room for the vectors, chunks; "TI hashes"), `encoder` (the text encoder's widths,
the vectors put in for one call).
"""
from modules.networks.textual_inversion.database import MAX_VECTORS, EmbeddingDatabase, fit_problem  # noqa: F401
from modules.networks.textual_inversion.encoder import (encoder_widths, token_embedding_module,  # noqa: F401
                                                        vectors_inserted)
from modules.networks.textual_inversion.files import (EMBEDDING_EXTENSIONS, PNG_CHUNK, SDXL_KEYS,  # noqa: F401
                                                      SINGLE_KEY, Embedding, is_preview_image, load_embedding)
from modules.networks.textual_inversion.tokens import (PLACEHOLDER_ID, Tokenize, default_tokenize,  # noqa: F401
                                                       find_embeddings_in_tokens, name_token_ids, ti_hashes)
