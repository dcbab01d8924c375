"""Face restoration (GFPGAN, CodeFormer) the way A1111 does it: find faces, align each to a 512×512 crop,
restore the crop, paste it back with a feathered mask, and blend the result over the original. Extras uses it, and
so does a generation with `restore_faces` (`restore_generated`, called on each image after the decode).

The restorers load with spandrel (CodeFormer from spandrel_extra_arches). Faces are found with RetinaFace
(ResNet-50, in modules/face_detection.py), from the same weights file A1111 uses,
``models/GFPGAN/detection_Resnet50_Final.pth``. Paste-back uses the feathered rectangle facexlib uses
without a face-parsing model.
"""
from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from modules.jobs import JobError
from modules.models import files
from modules.postprocess.upscalers import UpscalerError, load_descriptor

DETECTOR_FILE = "detection_Resnet50_Final.pth"
MODEL_FILES = {"GFPGAN": ("GFPGAN", "GFPGANv1.4.pth"), "CodeFormer": ("Codeformer", "codeformer-v0.1.0.pth")}


class FaceRestorationError(ValueError):
    """A restorer that cannot run: its file is missing or unreadable."""


class FaceRestorers:
    """GFPGAN and CodeFormer from models/GFPGAN and models/Codeformer; the detector from models/GFPGAN."""

    def __init__(self, models_root: Path, device, dtype):
        self.models_root = Path(models_root)
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[Path, object] = collections.OrderedDict()

    def _model_file(self, name: str) -> Path | None:
        folder, default = MODEL_FILES[name]
        root = self.models_root / folder
        if (root / default).is_file():
            return root / default
        # Like A1111: any .pth/.safetensors there whose name has the model's name in it, the newest version last.
        found = sorted(p for p in root.glob("*") if p.suffix.lower() in (".pth", ".safetensors")
                       and name.lower() in p.name.lower()) if root.is_dir() else []
        return found[-1] if found else None

    def _detector_file(self) -> Path | None:
        path = self.models_root / "GFPGAN" / DETECTOR_FILE
        return path if path.is_file() else None

    def available(self) -> list[str]:
        return [name for name in MODEL_FILES if self._model_file(name) and self._detector_file()]

    def missing_message(self, name: str) -> str:
        if name not in MODEL_FILES:
            return f"unknown face restoration model {name!r}; use one of {list(MODEL_FILES)}"
        folder, default = MODEL_FILES[name]
        needed = []
        if self._model_file(name) is None:
            needed.append(f"models/{folder}/{default}")
        if self._detector_file() is None:
            needed.append(f"models/GFPGAN/{DETECTOR_FILE}")
        return f"{name} needs {' and '.join(needed)}" if needed else ""

    def api_list(self) -> list[dict]:
        """/sdapi/v1/face-restorers, in A1111's order."""
        items = []
        for name in ("CodeFormer", "GFPGAN"):
            path = self._model_file(name)
            items.append({"name": name, "cmd_dir": str(path.parent) if path else None})
        return items

    def _cached(self, path: Path, build):
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        value = build(path)
        self._cache[path] = value
        while len(self._cache) > 3:      # the detector and both restorers
            self._cache.popitem(last=False)
        return value

    def _load_detector(self, path: Path):
        from modules.postprocess.face_detection import RetinaFace

        try:
            state_dict = files.load_state_dict(path)
        except files.ModelFileError as error:
            raise FaceRestorationError(str(error)) from None
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
        net = RetinaFace()
        try:
            net.load_state_dict(state_dict, strict=True)
        except RuntimeError:
            raise FaceRestorationError(f"{path.name}: not the RetinaFace ResNet-50 detector weights") from None
        return net.to(self.device).eval()

    def _load_restorer(self, name: str, path: Path):
        try:
            descriptor = load_descriptor(path, self.device, self.dtype)
        except UpscalerError as error:
            raise FaceRestorationError(str(error)) from None
        if descriptor.architecture.id != name:
            raise FaceRestorationError(f"{path.name}: is a {descriptor.architecture.name} model, not {name}")
        return descriptor

    def restore(self, image: Image.Image, name: str, visibility: float, codeformer_weight: float = 0.5,
                job=None) -> Image.Image:
        """`image` with every face found restored, blended over the original by `visibility` (0..1)."""
        model_path, detector_path = (self._model_file(name), self._detector_file()) if name in MODEL_FILES \
            else (None, None)
        if model_path is None or detector_path is None:
            raise FaceRestorationError(self.missing_message(name))
        if job is not None:
            job.textinfo = f"Restoring faces with {name}"
        with self._lock:
            detector = self._cached(detector_path, self._load_detector)
            descriptor = self._cached(model_path, lambda path: self._load_restorer(name, path))
        model, device, dtype = descriptor.model, descriptor.device, descriptor.dtype

        def run(face: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                face = face.to(device, dtype)
                if name == "CodeFormer":
                    return model(face, weight=codeformer_weight)[0]
                return model(face, return_rgb=False)[0]

        return restore_with(image, detector.detect, run, visibility)


def restore_with(image: Image.Image, detect: Callable[[np.ndarray], list[np.ndarray]],
                 restore: Callable[[torch.Tensor], torch.Tensor], visibility: float) -> Image.Image:
    """Detect, restore and paste back, then blend over `image` by `visibility` (A1111's Image.blend)."""
    from modules.postprocess.face_detection import restore_faces

    source = image.convert("RGB")
    rgb = np.asarray(source)
    restored = Image.fromarray(restore_faces(rgb, detect(rgb), restore))
    if visibility < 1.0:
        restored = Image.blend(source, restored, visibility)
    return restored


# ---------------------------------------------------------------- during a generation (A1111's p.restore_faces)

def model_for(request, settings) -> str | None:
    """The restorer a generation uses, or None: A1111's `restore_faces` (None: the `face_restoration` setting)
    with the `face_restoration_model` setting."""
    wanted = getattr(request, "restore_faces", None)
    if wanted is None:
        wanted = bool(settings.get("face_restoration", False))
    return (settings.get("face_restoration_model") or "CodeFormer") if wanted else None


def unavailable(restorers: FaceRestorers | None, request, settings) -> str | None:
    """Why the generation cannot restore faces as asked (the files to add, and where), or None. Checked before
    the job, so a missing model costs no sampling."""
    name = model_for(request, settings)
    if name is None:
        return None
    if restorers is None:
        return "face restoration is not available in this server"
    problem = restorers.missing_message(name)
    return f"face restoration: {problem} (or choose another face_restoration_model)" if problem else None


def restore_generated(restorers: FaceRestorers | None, ctx, image: Image.Image) -> Image.Image:
    """A generated image, its faces restored when the job asks for it: A1111 does it after the decode, before the
    scripts' postprocess_image, the img2img overlay, saving and the grid, fully (no blending), CodeFormer with the
    `code_former_weight` setting. `ctx` is the job's context (request, settings, job)."""
    name = model_for(ctx.request, ctx.settings)
    if name is None:
        return image
    problem = unavailable(restorers, ctx.request, ctx.settings)
    if problem:
        raise JobError(f"restore_faces: {problem}")
    try:
        weight = float(ctx.settings.get("code_former_weight", 0.5))
        restored = restorers.restore(image, name, 1.0, codeformer_weight=weight, job=ctx.job)
    except FaceRestorationError as error:   # a file that is there but unreadable: it names the file
        raise JobError(f"restore_faces: {error}") from None
    restored.info.update(image.info)
    return restored
