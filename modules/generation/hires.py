"""Hires. fix: the sizes A1111 computes for it (its second pass is in passes.py)."""
from __future__ import annotations

from dataclasses import dataclass


def _multiple_of_8(size: tuple[int, int]) -> tuple[int, int]:
    return max(64, size[0] // 8 * 8), max(64, size[1] // 8 * 8)


@dataclass(frozen=True)
class HiresPlan:
    """A1111's hires-fix sizes: `cover` is what the first pass is upscaled to, `target` the final size (the same
    unless both resize-to values are set: then the cover is cropped to the target). Both are multiples of 8, as
    the latents make them; the UI shows this same size."""

    cover: tuple[int, int]
    target: tuple[int, int]

    @classmethod
    def of_size(cls, width: int, height: int, scale: float, resize_x: int = 0, resize_y: int = 0) -> HiresPlan:
        if not resize_x and not resize_y:
            cover = target = (int(width * scale), int(height * scale))
        elif not resize_y:
            cover = target = (resize_x, resize_x * height // width)
        elif not resize_x:
            cover = target = (resize_y * width // height, resize_y)
        else:   # both: scale to cover the box, then crop to it
            target = (resize_x, resize_y)
            cover = ((resize_x, resize_x * height // width) if width / height < resize_x / resize_y
                     else (resize_y * width // height, resize_y))
        return cls(_multiple_of_8(cover), _multiple_of_8(target))

    @classmethod
    def of(cls, request) -> HiresPlan:
        return cls.of_size(request.width, request.height, request.hr_scale, request.hr_resize_x, request.hr_resize_y)

    @staticmethod
    def infotext(request) -> dict:
        """A1111's Hires keys, in its order."""
        params: dict = {}
        if request.hr_resize_x or request.hr_resize_y:
            params["Hires resize"] = f"{request.hr_resize_x}x{request.hr_resize_y}"
        else:
            scale = request.hr_scale   # written as A1111 shows it: "2", "1.5"
            params["Hires upscale"] = int(scale) if float(scale).is_integer() else scale
        if request.hr_second_pass_steps:
            params["Hires steps"] = request.hr_second_pass_steps
        params["Hires upscaler"] = request.hr_upscaler
        if request.hr_sampler_name and request.hr_sampler_name != request.sampler_name:
            params["Hires sampler"] = request.hr_sampler_name
        if request.hr_scheduler and request.hr_scheduler != request.scheduler:
            params["Hires schedule type"] = request.hr_scheduler
        if request.hr_prompt and request.hr_prompt != request.prompt:
            params["Hires prompt"] = request.hr_prompt
        if request.hr_negative_prompt and request.hr_negative_prompt != request.negative_prompt:
            params["Hires negative prompt"] = request.hr_negative_prompt
        return params
