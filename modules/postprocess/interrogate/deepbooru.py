"""DeepBooru tags as A1111's DeepDanbooru gives them: the image resized and filled to 512×512, each tag's probability
from A1111's model file, tags at or over interrogate_deepbooru_score_threshold kept (never `rating:*`), sorted
alphabetically or by probability (deepbooru_sort_alpha), deepbooru_filter_tags removed, written with spaces
(deepbooru_use_spaces), brackets escaped (deepbooru_escape) and ranks (interrogate_return_ranks)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modules import masking
from modules.jobs import JobError, NotFound
from modules.models import files
from modules.postprocess.interrogate.deepbooru_model import DeepDanbooruModel
from modules.untrusted import user_files

MODEL_FILE = "model-resnet_custom_v3.pt"
IMAGE_SIZE = 512
_SPECIAL = re.compile(r"([\\()])")


def find_model(folder: Path) -> Path:
    """A1111's file name if it is there, else the first .pt in the folder (as A1111's model loader takes)."""
    preferred = folder / MODEL_FILE
    if user_files.is_regular(preferred):
        return preferred
    found = sorted(path for path in folder.glob("*.pt") if user_files.is_regular(path))
    if found:
        return found[0]
    raise NotFound(f"DeepBooru model not found: put A1111's {MODEL_FILE} in {folder}")


def load_model(path: Path, device: torch.device, dtype: torch.dtype) -> DeepDanbooruModel:
    """A1111's file, read weights-only; a file that is unsafe or not this model is a JobError naming it."""
    try:
        data = files.load_object(path)
    except files.ModelFileError as error:
        raise JobError(str(error)) from None
    if not isinstance(data, dict) or "n_Conv_0.weight" not in data:
        raise JobError(f"{path.name}: not A1111's DeepDanbooru model (no n_Conv_0 layer)")
    try:
        model = DeepDanbooruModel.from_state_dict(data)
    except (RuntimeError, KeyError) as error:
        raise JobError(f"{path.name}: not A1111's DeepDanbooru model ({str(error).splitlines()[0]})") from None
    if len(model.tags) != model.n_Conv_178.out_channels:
        raise JobError(f"{path.name}: lists {len(model.tags)} tags for {model.n_Conv_178.out_channels} outputs")
    return model.eval().to(device, dtype)


@torch.no_grad()
def probabilities(model: DeepDanbooruModel, image: Image.Image) -> dict[str, float]:
    picture = masking.resize_image(2, image.convert("RGB"), IMAGE_SIZE, IMAGE_SIZE)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32)[None] / 255)
    weight = model.n_Conv_0.weight
    scores = model(pixels.to(weight.device, weight.dtype))[0].float().cpu().tolist()
    return dict(zip(model.tags, scores))


def format_tags(scores: dict[str, float], settings) -> str:
    """A1111's tag_multi: the kept tags, formatted per its settings, joined with ", "."""
    threshold = float(settings.get("interrogate_deepbooru_score_threshold", 0.5))
    kept = {tag: score for tag, score in scores.items() if score >= threshold and not tag.startswith("rating:")}
    if settings.get("deepbooru_sort_alpha", True):
        tags = sorted(kept)
    else:
        tags = [tag for tag, _ in sorted(kept.items(), key=lambda item: -item[1])]
    filtered = {name.strip().replace(" ", "_") for name in str(settings.get("deepbooru_filter_tags", "")).split(",")}
    result = []
    for tag in tags:
        if tag in filtered:
            continue
        text = tag.replace("_", " ") if settings.get("deepbooru_use_spaces", True) else tag
        if settings.get("deepbooru_escape", True):
            text = _SPECIAL.sub(r"\\\1", text)
        if settings.get("interrogate_return_ranks", False):
            text = f"({text}:{kept[tag]:.3f})"
        result.append(text)
    return ", ".join(result)
