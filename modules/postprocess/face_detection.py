"""Finding faces and pasting restored ones back, for face restoration (modules/face_restoration.py).

RetinaFace (ResNet-50) is defined here rather than taken from facexlib: facexlib would download missing
weights, loads them with plain ``torch.load``, and needs numba, filterpy and the non-headless OpenCV. It
reads the same weights file A1111 uses. Imported on the first restore (torchvision takes seconds to import).
"""
from __future__ import annotations

import itertools
from typing import Callable

import cv2
import numpy as np
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

FACE_SIZE = 512
# Where the five landmarks (eyes, nose, mouth corners) sit in a 512×512 FFHQ-aligned face (facexlib's).
FACE_TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                          [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)
DETECT_SIZE = 640            # images are detected at this shorter side, as GFPGAN's helper does
SCORE_THRESHOLD = 0.8
NMS_THRESHOLD = 0.4

Restore = Callable[[torch.Tensor], torch.Tensor]   # (1, 3, 512, 512) in [-1, 1] → the same


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
