"""Applying ControlNet units to a denoising pass.

Every pass type (txt2img, img2img, inpaint, the hires fix's second pass) runs through diffusers' own
pipelines in `modules.diffusion.sampling`. diffusers' ControlNet pipelines are separate copies of those pipelines that
cannot take our seeded noise, image latents or inpainting conditioning, so instead each pass's UNet is
given a forward that first runs the unit's diffusers `ControlNetModel` and hands its residuals to the UNet
(`down_block_additional_residuals`, the same hand-over diffusers' ControlNet pipelines make). The
extension's semantics are kept: guidance start/end as fractions of the pass's steps, "My prompt is more
important" as its per-layer soft weights, "ControlNet is more important" as control on the conditional half
of the CFG batch only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from modules import masking
from modules.diffusion.unet_forward import replaced_forward

# The extension's soft injection: output i gets weight × 0.825^(12-i), written for SD1's 13 outputs (12 down, then
# the middle) and cut to the first 10 for SDXL, whose middle output so gets 0.825^3. Kept as it is, since users'
# settings are tuned to it.
SOFT_WEIGHT_BASE = 0.825
SOFT_WEIGHT_LAYERS = 13


def pixel_perfect_resolution(image_size: tuple[int, int], width: int, height: int, resize_mode: int) -> int:
    """The extension's "Pixel Perfect": the preprocessor resolution at which the map lands 1:1 on the target."""
    raw_w, raw_h = image_size
    scale_h, scale_w = height / raw_h, width / raw_w
    scale = min(scale_h, scale_w) if resize_mode == 2 else max(scale_h, scale_w)
    return int(round(scale * min(raw_w, raw_h)))


def resize_map(detected: Image.Image, resize_mode: int, width: int, height: int) -> Image.Image:
    """A map to the pass's size: Just Resize, Crop and Resize, or Resize and Fill (bands in the edges' median
    colour, as the extension fills them, so a black-background map stays black)."""
    if resize_mode != 2:
        return masking.resize_image(resize_mode, detected.convert("RGB"), width, height)
    picture = detected.convert("RGB")
    scale = min(width / picture.width, height / picture.height)
    inner = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                           Image.LANCZOS)
    pixels = np.asarray(picture)
    edges = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    canvas = Image.new("RGB", (width, height), tuple(int(v) for v in np.median(edges, axis=0)))
    canvas.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
    return canvas


def hint_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image → (1, 3, H, W) in [0, 1], the layout diffusers' ControlNet pipelines feed the model."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


@dataclass
class PassControl:
    """One unit, ready for one pass."""

    model: torch.nn.Module   # diffusers ControlNetModel
    hint: torch.Tensor       # (1, 3, height, width) in [0, 1], at the pass's pixel size
    weight: float
    start: float
    end: float
    soft: bool               # per-layer soft weights (a Control Mode other than Balanced; hires canny/MLSD)
    cond_only: bool          # control only the conditional half ("ControlNet is more important"; shuffle)

    def active(self, fraction: float) -> bool:
        return self.weight > 0 and self.start <= fraction <= self.end

    def residuals(self, sample, timestep, encoder_hidden_states, added_cond_kwargs, images: int):
        model = self.model
        dtype = model.dtype
        x = sample[:, :model.config.in_channels]   # 9-channel inpainting UNets: the ControlNet sees the latents
        if self.hint.device != x.device or self.hint.dtype != dtype:   # once per pass, not at every step
            self.hint = self.hint.to(x.device, dtype)
        hint = self.hint.expand(x.shape[0], -1, -1, -1)
        extra = None
        if added_cond_kwargs is not None:
            extra = {key: value.to(dtype) for key, value in added_cond_kwargs.items()}
        down, mid = model(x.to(dtype), timestep, encoder_hidden_states=encoder_hidden_states.to(dtype),
                          controlnet_cond=hint, conditioning_scale=1.0, added_cond_kwargs=extra, return_dict=False)
        outputs = [*down, mid]
        scales = [self.weight * (SOFT_WEIGHT_BASE ** (SOFT_WEIGHT_LAYERS - 1 - i) if self.soft else 1.0)
                  for i in range(len(outputs))]
        outputs = [output * scale for output, scale in zip(outputs, scales)]
        if self.cond_only and x.shape[0] == 2 * images:   # the CFG batch is [uncond, cond]
            keep = torch.ones(x.shape[0], 1, 1, 1, device=x.device, dtype=dtype)
            keep[:images] = 0
            outputs = [output * keep for output in outputs]
        return outputs[:-1], outputs[-1]


@contextlib.contextmanager
def controlled_unet(unet, controls: list[PassControl], fraction: Callable[[], float], images: int):
    """For the duration of the block, `unet(...)` is guided by the active controls.

    `fraction()` is how far the pass is (step index / steps it runs); `images` the batch size before CFG.
    """
    if not controls:
        yield
        return
    original = unet.forward

    def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        now = fraction()
        down = mid = None
        for control in controls:
            if not control.active(now):
                continue
            unit_down, unit_mid = control.residuals(sample, timestep, encoder_hidden_states,
                                                    kwargs.get("added_cond_kwargs"), images)
            down = unit_down if down is None else [a + b for a, b in zip(down, unit_down)]
            mid = unit_mid if mid is None else mid + unit_mid
        if down is not None:
            dtype = sample.dtype
            kwargs["down_block_additional_residuals"] = [residual.to(dtype) for residual in down]
            kwargs["mid_block_additional_residual"] = mid.to(dtype)
        return original(sample, timestep, encoder_hidden_states, *args, **kwargs)

    with replaced_forward(unet, forward):
        yield
