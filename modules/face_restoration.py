"""Face restoration (GFPGAN, CodeFormer) the way A1111 does it: find faces, align each to a 512×512 crop,
restore the crop, paste it back with a feathered mask, and blend the result over the original.

The restorers load with spandrel (CodeFormer from spandrel_extra_arches). Faces are found with RetinaFace
(ResNet-50), from the same weights file A1111 uses, ``models/GFPGAN/detection_Resnet50_Final.pth``. The
network is defined here rather than taken from facexlib: facexlib would download missing weights, loads
them with plain ``torch.load``, and needs numba, filterpy and the non-headless OpenCV. Paste-back uses the
feathered rectangle facexlib uses without a face-parsing model.
"""
from __future__ import annotations

import collections
import itertools
import threading
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.nn import functional as F

from modules.models import files
from modules.upscalers import UpscalerError, load_descriptor

FACE_SIZE = 512
DETECTOR_FILE = "detection_Resnet50_Final.pth"
MODEL_FILES = {"GFPGAN": ("GFPGAN", "GFPGANv1.4.pth"), "CodeFormer": ("Codeformer", "codeformer-v0.1.0.pth")}
# Where the five landmarks (eyes, nose, mouth corners) sit in a 512×512 FFHQ-aligned face (facexlib's).
FACE_TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                          [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)
DETECT_SIZE = 640            # images are detected at this shorter side, as GFPGAN's helper does
SCORE_THRESHOLD = 0.8
NMS_THRESHOLD = 0.4

Restore = Callable[[torch.Tensor], torch.Tensor]   # (1, 3, 512, 512) in [-1, 1] → the same


class FaceRestorationError(ValueError):
    """A restorer that cannot run: its file is missing or unreadable."""


# ---------------------------------------------------------------- RetinaFace (ResNet-50)

def _conv_bn(inp: int, out: int, kernel: int = 3, leaky: float | None = 0.0) -> nn.Sequential:
    layers = [nn.Conv2d(inp, out, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(out)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


class _SSH(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv3X3 = _conv_bn(channels, channels // 2, leaky=None)
        self.conv5X5_1 = _conv_bn(channels, channels // 4)
        self.conv5X5_2 = _conv_bn(channels // 4, channels // 4, leaky=None)
        self.conv7X7_2 = _conv_bn(channels // 4, channels // 4)
        self.conv7x7_3 = _conv_bn(channels // 4, channels // 4, leaky=None)

    def forward(self, x):
        first = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(first), self.conv7x7_3(self.conv7X7_2(first))], 1))


class _FPN(nn.Module):
    def __init__(self, in_channels: list[int], channels: int):
        super().__init__()
        self.output1, self.output2, self.output3 = (_conv_bn(c, channels, kernel=1) for c in in_channels)
        self.merge1 = _conv_bn(channels, channels)
        self.merge2 = _conv_bn(channels, channels)

    def forward(self, features):
        c1, c2, c3 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        c2 = self.merge2(c2 + F.interpolate(c3, size=c2.shape[-2:], mode="nearest"))
        c1 = self.merge1(c1 + F.interpolate(c2, size=c1.shape[-2:], mode="nearest"))
        return [c1, c2, c3]


class _Head(nn.Module):
    def __init__(self, channels: int, outputs: int):
        super().__init__()
        self.outputs = outputs
        self.conv1x1 = nn.Conv2d(channels, 2 * outputs, 1)   # two anchors per position

    def forward(self, x):
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.outputs)


class RetinaFace(nn.Module):
    """RetinaFace with a ResNet-50 body; module names match detection_Resnet50_Final.pth."""

    MIN_SIZES = ((16, 32), (64, 128), (256, 512))
    STEPS = (8, 16, 32)
    VARIANCE = (0.1, 0.2)
    MEAN_BGR = (104.0, 117.0, 123.0)

    def __init__(self):
        super().__init__()
        backbone = torchvision.models.resnet50(weights=None)
        self.body = torchvision.models._utils.IntermediateLayerGetter(
            backbone, {"layer2": 1, "layer3": 2, "layer4": 3})
        self.fpn = _FPN([512, 1024, 2048], 256)
        self.ssh1, self.ssh2, self.ssh3 = _SSH(256), _SSH(256), _SSH(256)
        self.ClassHead = nn.ModuleList(_Head(256, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(256, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(256, 10) for _ in range(3))

    def forward(self, x):
        fpn = self.fpn(list(self.body(x).values()))
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], 1)
        scores = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], 1).softmax(-1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], 1)
        return boxes, scores, landmarks

    def priors(self, height: int, width: int) -> torch.Tensor:
        anchors = []
        for step, sizes in zip(self.STEPS, self.MIN_SIZES):
            rows, cols = -(-height // step), -(-width // step)
            for i, j in itertools.product(range(rows), range(cols)):
                for size in sizes:
                    anchors.append([(j + 0.5) * step / width, (i + 0.5) * step / height, size / width, size / height])
        return torch.tensor(anchors)

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Five landmarks (5×2, in `rgb`'s pixels) per face found, best first."""
        height, width = rgb.shape[:2]
        scale = DETECT_SIZE / min(height, width)
        resized = cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_LINEAR)
        h, w = resized.shape[:2]
        param = next(self.parameters())
        bgr = torch.from_numpy(resized[:, :, ::-1].astype(np.float32) - np.float32(self.MEAN_BGR))
        boxes, scores, landmarks = self(bgr.permute(2, 0, 1)[None].to(param.device, param.dtype))
        boxes, scores, landmarks = boxes[0].float().cpu(), scores[0, :, 1].float().cpu(), landmarks[0].float().cpu()
        priors = self.priors(h, w)
        centres = priors[:, :2] + boxes[:, :2] * self.VARIANCE[0] * priors[:, 2:]
        sizes = priors[:, 2:] * torch.exp(boxes[:, 2:] * self.VARIANCE[1])
        corners = torch.cat([centres - sizes / 2, centres + sizes / 2], 1) * torch.tensor([w, h, w, h])
        points = priors[:, None, :2] + landmarks.view(-1, 5, 2) * self.VARIANCE[0] * priors[:, None, 2:]
        points = points * torch.tensor([w, h])
        keep = scores > SCORE_THRESHOLD
        corners, scores, points = corners[keep], scores[keep], points[keep]
        order = torchvision.ops.nms(corners, scores, NMS_THRESHOLD)
        return [(points[i] / scale).numpy() for i in order]


# ---------------------------------------------------------------- crop, restore, paste back

def restore_faces(rgb: np.ndarray, faces: list[np.ndarray], restore: Restore) -> np.ndarray:
    """Align each face (five landmarks) to 512×512, run `restore`, and paste it back feathered."""
    result = rgb.astype(np.float32)
    height, width = rgb.shape[:2]
    for landmarks in faces:
        matrix = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), FACE_TEMPLATE, method=cv2.LMEDS)[0]
        if matrix is None:
            continue
        crop = cv2.warpAffine(rgb, matrix, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(132, 133, 135))
        tensor = torch.from_numpy(crop.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        restored = restore(tensor).float().clamp(-1, 1)[0].permute(1, 2, 0).cpu().numpy()
        restored = (restored + 1.0) * 127.5
        inverse = cv2.invertAffineTransform(matrix)
        back = cv2.warpAffine(restored, inverse, (width, height))
        mask = cv2.warpAffine(np.ones((FACE_SIZE, FACE_SIZE), np.float32), inverse, (width, height))
        mask = cv2.erode(mask, np.ones((2, 2), np.uint8))
        edge = max(1, int(np.sqrt(mask.sum()) // 20))
        mask = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
        mask = cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0)[:, :, None]
        result = mask * back + (1 - mask) * result
    return np.clip(result, 0, 255).round().astype(np.uint8)


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

    def _load_detector(self, path: Path) -> RetinaFace:
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


def restore_with(image: Image.Image, detect: Callable[[np.ndarray], list[np.ndarray]], restore: Restore,
                 visibility: float) -> Image.Image:
    """Detect, restore and paste back, then blend over `image` by `visibility` (A1111's Image.blend)."""
    source = image.convert("RGB")
    rgb = np.asarray(source)
    restored = Image.fromarray(restore_faces(rgb, detect(rgb), restore))
    if visibility < 1.0:
        restored = Image.blend(source, restored, visibility)
    return restored
