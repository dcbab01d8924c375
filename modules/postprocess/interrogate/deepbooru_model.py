"""A1111's DeepDanbooruModel (TorchDeepDanbooru's ResNet, `modules/deepbooru_model.py`) as a plain torch module with
the same layer names (`n_Conv_0` … `n_Conv_178`), so A1111's `model-resnet_custom_v3.pt` loads with strict=True.

A1111's file spells out 179 convolutions and the forward pass line by line; here the same network is built from its
block table. Each bottleneck block is 1×1 → 3×3 → 1×1 plus a shortcut; a block that changes the shape has a 1×1
projection, numbered before its three convolutions (the first block of a stage) or after them (the one downsampling
block in the middle of the third stage). The widths scale with the first convolution's (64 in A1111's file), so a
file with narrower layers of the same names loads too (the tests' tiny models).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (bottleneck width, blocks, where the first block's projection is numbered) per stage, widths in units of the stem's
# 64 channels; a stage's first block downsamples (stride 2) except the first stage's. The third stage is two runs:
# its second run starts with the block whose projection comes after its convolutions.
_STAGES = ((1, 3, "before", 1), (2, 8, "before", 2), (4, 20, "before", 2), (4, 20, "after", 2),
           (8, 3, "before", 2), (16, 3, "before", 2))
_EXPANSION = 4


class _Block:
    """One bottleneck block's layer numbers: the three convolutions and the projection (or None)."""

    def __init__(self, convs: tuple[int, int, int], projection: int | None, stride: int):
        self.convs, self.projection, self.stride = convs, projection, stride


def _layout(base: int) -> tuple[list[tuple[int, int, int, int]], list[_Block]]:
    """Every convolution as (in, out, kernel, stride), index = its number, and the blocks that use them."""
    convs = [(3, base, 7, 2)]
    blocks = []
    channels = base
    for width_units, count, projection_at, first_stride in _STAGES:
        width, out = base * width_units, base * width_units * _EXPANSION
        for index in range(count):
            stride = first_stride if index == 0 else 1
            needs_projection = index == 0
            projection = None
            if needs_projection and projection_at == "before":
                projection = len(convs)
                convs.append((channels, out, 1, stride))
            first = len(convs)
            convs += [(channels, width, 1, 1), (width, width, 3, stride), (width, out, 1, 1)]
            if needs_projection and projection_at == "after":
                projection = len(convs)
                convs.append((channels, out, 1, stride))
            blocks.append(_Block((first, first + 1, first + 2), projection, stride))
            channels = out
    return convs, blocks


class DeepDanbooruModel(nn.Module):
    """Input: a batch of RGB images, NHWC, values 0..1 (A1111 gives 512×512); output: each tag's probability."""

    def __init__(self, base: int = 64, tag_count: int = 9176):
        super().__init__()
        self.tags: list[str] = []
        convs, self._blocks = _layout(base)
        for number, (channels_in, channels_out, kernel, stride) in enumerate(convs):
            setattr(self, f"n_Conv_{number}", nn.Conv2d(channels_in, channels_out, kernel, stride=stride))
        self.n_MaxPool_0 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.n_Conv_178 = nn.Conv2d(convs[-1][1], tag_count, 1, bias=False)   # the tags' head

    def _conv(self, number: int) -> nn.Conv2d:
        return getattr(self, f"n_Conv_{number}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.pad(images.permute(0, 3, 1, 2), [2, 3, 2, 3], value=0)
        x = F.relu(self.n_Conv_0(x.to(self.n_Conv_0.weight.dtype)))
        x = self.n_MaxPool_0(F.pad(x, [0, 1, 0, 1], value=float("-inf")))
        for block in self._blocks:
            first, middle, last = block.convs
            shortcut = x if block.projection is None else self._conv(block.projection)(x)
            y = F.relu(self._conv(first)(x))
            # TensorFlow's "same" padding, as A1111's file pads: one extra row/column after for a stride of 2
            y = F.pad(y, [0, 1, 0, 1] if block.stride == 2 else [1, 1, 1, 1], value=0)
            y = self._conv(last)(F.relu(self._conv(middle)(y)))
            x = F.relu(y + shortcut)
        x = self.n_Conv_178(x)
        return torch.sigmoid(F.avg_pool2d(x, kernel_size=x.shape[-2:]).flatten(1))

    @classmethod
    def from_state_dict(cls, state_dict: dict) -> "DeepDanbooruModel":
        """The model for A1111's file (its tensors and `tags` list): sizes read from the tensors, loaded strictly."""
        tensors = {key: value for key, value in state_dict.items() if key != "tags"}
        model = cls(base=tensors["n_Conv_0.weight"].shape[0], tag_count=tensors["n_Conv_178.weight"].shape[0])
        model.load_state_dict(tensors, strict=True)
        model.tags = [str(tag) for tag in state_dict.get("tags", [])]
        return model
