"""The interrogator: the two models A1111's Interrogate buttons and POST /sdapi/v1/interrogate name — "clip" (BLIP
caption, then CLIP's ranking when a CLIP model and category lists are there) and "deepdanbooru" (tags) — loaded on
first use from the users' files (into RAM), kept while the files are unchanged, and run on the job worker (the device
owner), on the device only while they work unless interrogate_keep_models_in_memory is on.

Without a CLIP model (OpenAI's ViT-L-14.pt or a Hugging Face folder, in --clip-models-path or models/CLIP/) or
category lists, "clip" answers with the BLIP caption alone and logs why.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import torch
from PIL import Image

from modules.jobs import JobError
from modules.postprocess.interrogate import blip, clip_ranking, deepbooru

log = logging.getLogger(__name__)

MODELS = ("clip", "deepdanbooru")
CPU = torch.device("cpu")


class Interrogator:
    """Captions and tags for images. `models` is the models folder, `data` the web UI's data folder (A1111 keeps its
    category lists in `interrogate/` there), `clip_models_path` A1111's --clip-models-path, searched for a CLIP model
    before `models/CLIP`."""

    def __init__(self, models: Path, data: Path, device: torch.device, dtype: torch.dtype,
                 clip_models_path: Path | None = None):
        self.models, self.data = Path(models), Path(data)
        self.clip_folders = ([Path(clip_models_path)] if clip_models_path else []) + [self.models / "CLIP"]
        self.device = device
        # half precision only on the GPU: CPU kernels for fp16 convolutions are slow or missing
        self.dtype = dtype if device.type == "cuda" else torch.float32
        self._loaded: dict[tuple[str, Path], tuple[float, object]] = {}
        self._lock = threading.Lock()

    def interrogate(self, image: Image.Image, model: str, settings) -> str:
        image = image.convert("RGB")
        if model == "clip":
            return self.clip_caption(image, settings)
        if model == "deepdanbooru":
            return self.deepbooru_tags(image, settings)
        raise JobError(f"model: must be one of {', '.join(MODELS)}; got {model!r}")

    def deepbooru_tags(self, image: Image.Image, settings) -> str:
        path = deepbooru.find_model(self.models / "torch_deepdanbooru")
        model = self._cached("deepbooru", path, lambda: deepbooru.load_model(path, CPU, self.dtype))
        with self._on_device(model, settings):
            scores = deepbooru.probabilities(model, image)
        return deepbooru.format_tags(scores, settings)

    def clip_caption(self, image: Image.Image, settings) -> str:
        location = blip.find_model(self.models / "BLIP")
        captioner = self._cached("blip", location, lambda: blip.BlipCaptioner.load(location, CPU, self.dtype))
        with self._on_device(captioner, settings):
            caption = captioner.caption(image, settings)
        clip_model = clip_ranking.find_clip_model(self.clip_folders)
        skip = list(settings.get("interrogate_clip_skip_categories", []) or [])
        lists = clip_ranking.categories([self.data / "interrogate", self.models / "interrogate"], skip)
        if clip_model is None or not lists:
            reason = (clip_ranking.missing_model_reason(self.clip_folders) if clip_model is None else
                      f"no category lists (*.txt) in {self.data / 'interrogate'} or {self.models / 'interrogate'}")
            log.warning("Interrogate CLIP: the BLIP caption alone (%s)", reason)
            return caption
        ranker = self._cached("clip", clip_model, lambda: clip_ranking.ClipRanker.load(clip_model, CPU, self.dtype))
        with self._on_device(ranker, settings):
            return clip_ranking.append_matches(caption, ranker, image, lists, settings)

    @contextlib.contextmanager
    def _on_device(self, model, settings):
        """The model on the device while it runs; back in RAM afterwards unless interrogate_keep_models_in_memory
        (A1111's "Keep models in VRAM"), so interrogating leaves the VRAM to generation."""
        model.to(self.device)
        try:
            yield model
        finally:
            if not settings.get("interrogate_keep_models_in_memory", False):
                model.to(CPU)

    def _cached(self, kind: str, path: Path, load):
        """The loaded model for `path`, loaded again when its file (or folder's config) has changed."""
        stamp = _stamp(path)
        with self._lock:
            found = self._loaded.get((kind, path))
            if found is not None and found[0] == stamp:
                return found[1]
            # one model of a kind at a time: a replaced file frees the old weights
            self._loaded = {key: value for key, value in self._loaded.items() if key[0] != kind}
        loaded = load()
        with self._lock:
            self._loaded[(kind, path)] = (stamp, loaded)
        return loaded


def _stamp(path: Path) -> float:
    target = path / "config.json" if path.is_dir() else path
    return target.stat().st_mtime_ns
