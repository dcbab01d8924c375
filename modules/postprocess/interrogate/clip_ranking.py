"""The CLIP half of A1111's Interrogate CLIP: each category list (artists.txt, flavors.txt, mediums.txt, movements.txt,
… — A1111's `interrogate/` folder; a `name.topN.txt` file gives N matches) ranked against the image with CLIP, the
best matches appended to the BLIP caption as ", match" or, with interrogate_return_ranks, ", (match:0.123)".

A1111 uses OpenAI's CLIP ViT-L/14; here a Hugging Face-layout CLIP folder in `models/CLIP/` (e.g.
openai/clip-vit-large-patch14: config.json, weights, tokenizer and preprocessor files). The lists are read from
`interrogate/` in the data folder or `models/interrogate/`; never downloaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

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


def find_clip_model(folder: Path) -> Path | None:
    folders = sorted(path.parent for path in folder.glob("*/config.json") if user_files.is_regular(path))
    return folders[0] if folders else None


class ClipRanker:
    """A loaded CLIP model, its tokenizer and image preprocessing."""

    def __init__(self, location: Path, device: torch.device, dtype: torch.dtype):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        self.model = CLIPModel.from_pretrained(location, local_files_only=True).eval().to(device, dtype)
        self.tokenizer = CLIPTokenizer.from_pretrained(location, local_files_only=True)
        self.processor = CLIPImageProcessor.from_pretrained(location, local_files_only=True) \
            if user_files.is_regular(location / "preprocessor_config.json") \
            else CLIPImageProcessor(size={"shortest_edge": self.model.config.vision_config.image_size},
                                    crop_size=self.model.config.vision_config.image_size)
        self.device, self.dtype = device, dtype

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
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
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
