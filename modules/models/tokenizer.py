"""The CLIP tokenizer, built offline from the BPE vocabulary that the open_clip package ships.

Stable Diffusion's tokenizers (openai/clip-vit-large-patch14 and the OpenCLIP ones) all use the same
49,408-token BPE vocabulary. Rebuilding it from open_clip's `bpe_simple_vocab_16e6.txt.gz` gives ids
identical to the hub's `vocab.json`/`merges.txt` (see reference/offline-loading.md §6), so no
tokenizer is ever fetched. Only the padding token differs: SD1 pads with <|endoftext|>, SD2 and
SDXL's second encoder with "!".
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

VOCAB_SIZE = 49408
BOS_ID = 49406
EOS_ID = 49407


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the open_clip_torch package is not installed; it provides the CLIP vocabulary")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table (needed to rebuild the vocabulary)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


@functools.lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    lines = gzip.decompress(_bpe_file().read_bytes()).decode("utf-8").split("\n")
    merges = lines[1: 49152 - 256 - 2 + 1]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=2)
def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer   # not at import time: transformers is slow to import

    vocab, merges = _vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m.split()) for m in merges], pad_token=pad_token,
                         model_max_length=77)
