"""The CLIP half of A1111's Interrogate CLIP: each category list (artists.txt, flavors.txt, mediums.txt, movements.txt,
… — A1111's `interrogate/` folder; a `name.topN.txt` file gives N matches) ranked against the image with CLIP, the
best matches appended to the BLIP caption as ", match" or, with interrogate_return_ranks, ", (match:0.123)".

A1111 uses OpenAI's CLIP ViT-L/14 from the file the clip package downloads, `ViT-L-14.pt`; here that file (read
weights-only by `openai_clip`) or a Hugging Face-layout CLIP folder (e.g. openai/clip-vit-large-patch14: config.json,
weights, tokenizer and preprocessor files), in `--clip-models-path` or `models/CLIP/`. The lists are read from
`interrogate/` in the data folder or `models/interrogate/`; never downloaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from modules.models.tokenizer import clip_tokenizer
from modules.postprocess.interrogate import openai_clip
from modules.untrusted import user_files

_TOP_N = re.compile(r"\.top(\d+)$")
MAX_LIST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Category:
    name: str
    top: int
    items: list[str]


def categories(folders: list[Path], skip: list[str]) -> list[Category]:
    """The category lists of the first folder that has any, minus the interrogate_clip_skip_categories ones."""
    for folder in folders:
        found = sorted(path for path in folder.glob("*.txt") if user_files.is_regular(path))
        if found:
            return [_category(path) for path in found if path.stem not in skip]
    return []


def _category(path: Path) -> Category:
    match = _TOP_N.search(path.stem)
    lines = user_files.read_text(path, errors="replace", limit=MAX_LIST_BYTES).splitlines()
    return Category(name=path.stem, top=1 if match is None else int(match.group(1)),
                    items=[line.strip() for line in lines if line.strip()])


def find_clip_model(folders: list[Path]) -> Path | None:
    """The CLIP model of the first folder that has one: OpenAI's ViT-L-14.pt (A1111's), else a Hugging Face-layout
    folder (one with a config.json), else another of OpenAI's .pt files (ViT-B-32.pt, …)."""
    for folder in folders:
        preferred = folder / openai_clip.PREFERRED_FILE
        if user_files.is_regular(preferred):
            return preferred
        layouts = sorted(path.parent for path in folder.glob("*/config.json") if user_files.is_regular(path))
        others = sorted(path for path in folder.glob("*.pt") if user_files.is_regular(path))
        if layouts or others:
            return (layouts or others)[0]
    return None


def missing_model_reason(folders: list[Path]) -> str:
    return (f"no CLIP model in {' or '.join(str(folder) for folder in folders)}: put OpenAI's "
            f"{openai_clip.PREFERRED_FILE} there (A1111's file, from --clip-models-path or ~/.cache/clip), or a "
            f"Hugging Face-layout CLIP folder (config.json, weights, tokenizer files) as <name>/")


class ClipRanker:
    """A loaded CLIP model, its tokenizer and image preprocessing."""

    def __init__(self, model, tokenizer, processor, device: torch.device, dtype: torch.dtype):
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.device, self.dtype = device, dtype

    @classmethod
    def load(cls, location: Path, device: torch.device, dtype: torch.dtype) -> "ClipRanker":
        """From a Hugging Face-layout folder, or OpenAI's .pt file with SD's CLIP tokenizer (the same BPE)."""
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        if location.is_dir():
            model = CLIPModel.from_pretrained(location, local_files_only=True)
            tokenizer = CLIPTokenizer.from_pretrained(location, local_files_only=True)
        else:
            model, tokenizer = openai_clip.load_model(location), clip_tokenizer()
        size = model.config.vision_config.image_size
        # without a preprocessor_config.json: OpenAI's preprocessing (bicubic resize, centre crop, its mean/std)
        processor = CLIPImageProcessor.from_pretrained(location, local_files_only=True) \
            if user_files.is_regular(location / "preprocessor_config.json") \
            else CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size)
        return cls(model.eval().to(device, dtype), tokenizer, processor, device, dtype)

    def to(self, device: torch.device) -> "ClipRanker":
        self.model.to(device)
        self.device = device
        return self

    @torch.no_grad()
    def image_features(self, image: Image.Image) -> torch.Tensor:
        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        features = self._features(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
        return features / features.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def rank(self, image_features: torch.Tensor, texts: list[str], top: int) -> list[tuple[str, float]]:
        """A1111's rank: softmax over 100 × cosine similarity, the `top` best with their percentages."""
        if not texts:
            return []
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                                max_length=self.model.config.text_config.max_position_embeddings)
        text_features = self._features(self.model.get_text_features(**tokens.to(self.device)))
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        similarity = (100.0 * image_features @ text_features.T).softmax(dim=-1).mean(dim=0)
        probabilities, indices = similarity.float().cpu().topk(min(top, len(texts)))
        return [(texts[index], float(probability) * 100) for probability, index in zip(probabilities, indices)]

    @staticmethod
    def _features(output) -> torch.Tensor:
        # transformers 5 returns a model output where 4.x returned the projected tensor
        return output if isinstance(output, torch.Tensor) else output.pooler_output


def append_matches(caption: str, ranker: ClipRanker, image: Image.Image, lists: list[Category], settings) -> str:
    """The caption with each category's best matches appended, as A1111 writes them."""
    features = ranker.image_features(image)
    limit = int(settings.get("interrogate_clip_dict_limit", 1500))
    with_ranks = bool(settings.get("interrogate_return_ranks", False))
    for category in lists:
        items = category.items[:limit] if limit else category.items
        for match, score in ranker.rank(features, items, category.top):
            caption += f", ({match}:{score / 100:.3f})" if with_ranks else f", {match}"
    return caption
