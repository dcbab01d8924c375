"""Preparing pictures and masks for img2img, inpainting, outpainting and SD upscale.

Pure PIL/numpy functions, no models: the generation core calls them around the
pipeline to do to its inputs what A1111's img2img does (A1111's
``images.resize_image``, ``masking.py``, ``StableDiffusionProcessingImg2Img.init``,
``apply_overlay``, ``split_grid``/``combine_grid`` and the outpainting scripts).

Regions are ``(x1, y1, x2, y2)`` boxes as PIL uses them (x2 and y2 exclusive).
Masks are "L" images: white (255) is the area to repaint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from modules.untrusted.user_images import to_rgb_or_rgba

Region = tuple[int, int, int, int]

# A1111's names for img2img's ``resize_mode`` 0-3.
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")

# (blur radius, composite repeats) for fill(), composited in this order (A1111's values).
_FILL_LAYERS = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))


# ---------------------------------------------------------------- resizing

def resize_image(mode: int, image: Image.Image, width: int, height: int,
                 upscale: Callable[[Image.Image, float], Image.Image] | None = None) -> Image.Image:
    """Resize to exactly ``width`` x ``height`` with an img2img resize mode:
    0 "Just resize" (stretch), 1 "Crop and resize" (cover, centred crop),
    2 "Resize and fill" (fit, centred, the empty bands filled by repeating the
    edge rows or columns), 3 "Just resize (latent upscale)" = 0 here (the latent
    resize happens in the pipeline). ``upscale(image, scale)`` (A1111's
    upscaler_for_img2img) enlarges RGB pictures when they must grow; Lanczos does
    the rest. RGB, RGBA and L images keep their mode; others become RGB/RGBA."""
    if mode not in range(len(RESIZE_MODES)):
        choices = ", ".join(f"{i} {name!r}" for i, name in enumerate(RESIZE_MODES))
        raise ValueError(f"resize mode must be one of {choices}; got {mode!r}")
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize to {width}x{height}")
    if image.mode not in ("RGB", "RGBA", "L"):
        image = to_rgb_or_rgba(image)
    if mode in (0, 3):
        return _resize(image, width, height, upscale)

    src_w, src_h = image.size
    # Integer comparison of width/height against src_w/src_h, so equal ratios stay exact.
    wider_target = width * src_h > src_w * height
    if mode == 1:
        if wider_target:  # match the width, crop top and bottom
            new_w, new_h = width, src_h * width // src_w
        else:
            new_w, new_h = src_w * height // src_h, height
    else:
        if wider_target:  # match the height, fill left and right
            new_w, new_h = max(1, src_w * height // src_h), height
        else:
            new_w, new_h = width, max(1, src_h * width // src_w)
    resized = _resize(image, new_w, new_h, upscale)
    left, top = width // 2 - new_w // 2, height // 2 - new_h // 2

    if mode == 1:
        result = Image.new(image.mode, (width, height))
        result.paste(resized, (left, top))
        return result
    pixels = np.asarray(resized)
    pad = [(top, height - new_h - top), (left, width - new_w - left)] + [(0, 0)] * (pixels.ndim - 2)
    return Image.fromarray(np.pad(pixels, pad, mode="edge"), resized.mode)


def _resize(image: Image.Image, width: int, height: int,
            upscale: Callable[[Image.Image, float], Image.Image] | None) -> Image.Image:
    # Upscaler models take RGB; masks and alpha pictures go through Lanczos
    # (A1111 also skips the upscaler for "L" masks).
    scale = max(width / image.width, height / image.height)
    if upscale is not None and image.mode == "RGB" and scale > 1:
        image = upscale(image, scale).convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def flatten(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    """RGB: a transparent picture over ``background`` (A1111
    img2img_background_color); CMYK, palette, 16-bit and others converted."""
    image = to_rgb_or_rgba(image)
    if image.mode == "RGBA":
        try:
            canvas = Image.new("RGBA", image.size, background)
        except ValueError:
            raise ValueError(f"background colour {background!r} is not a colour") from None
        canvas.alpha_composite(image)
        image = canvas
    return image.convert("RGB")


# ---------------------------------------------------------------- masks

def prepare_mask(mask: Image.Image, *, blur_x: float, blur_y: float, invert: bool) -> Image.Image:
    """The user's mask as "L" (white = repaint), optionally inverted ("Inpaint
    not masked"), then Gaussian-blurred along each axis (A1111's "Mask blur").

    As A1111's create_binary_mask: a mask with transparency (strokes painted on
    a transparent layer) is its alpha channel, rounded; any other is its
    brightness."""
    if blur_x < 0 or blur_y < 0:
        raise ValueError(f"mask blur must not be negative (got {blur_x}, {blur_y})")
    if mask.mode != "L":
        mask = to_rgb_or_rgba(mask)
    if mask.mode == "RGBA" and mask.getextrema()[3] != (255, 255):
        mask = binarize(mask.getchannel("A"), threshold=129)  # A1111 rounds alpha with "> 128"
    else:
        mask = mask.convert("L")
    if invert:
        mask = ImageOps.invert(mask)

    pixels = np.asarray(mask)
    # A1111's kernel: about 2.5 sigma each side, one axis at a time.
    if blur_x > 0:
        pixels = cv2.GaussianBlur(pixels, (2 * int(2.5 * blur_x + 0.5) + 1, 1), blur_x)
    if blur_y > 0:
        pixels = cv2.GaussianBlur(pixels, (1, 2 * int(2.5 * blur_y + 0.5) + 1), blur_y)
    return Image.fromarray(pixels, "L")


def binarize(mask: Image.Image, threshold: int = 128) -> Image.Image:
    """"L" with only 0 and 255: 255 where the mask is at least ``threshold``
    (A1111's mask rounding)."""
    return mask.convert("L").point([255 if v >= threshold else 0 for v in range(256)])


def crop_region(mask: Image.Image, padding: int) -> Region | None:
    """The box around the mask's non-black pixels grown by ``padding`` on each
    side and clamped to the picture ("Only masked padding"); None for an
    empty mask."""
    if padding < 0:
        raise ValueError(f"padding must not be negative (got {padding})")
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)


def get_crop_region_v2(mask, pad: int = 0) -> Region | None:
    """A1111's: the box (x1, y1, x2, y2) around a mask's non-black pixels (a PIL image or a numpy array), grown by
    `pad` and clamped to the mask; None for an all-black mask."""
    mask = mask if isinstance(mask, Image.Image) else Image.fromarray(np.asarray(mask))
    return crop_region(mask, pad)


def get_crop_region(mask, pad: int = 0) -> Region:
    """A1111's older form: as get_crop_region_v2, but an all-black mask gives A1111's inverted box
    (width - pad, height - pad, pad, pad), clamped, instead of None."""
    mask = mask if isinstance(mask, Image.Image) else Image.fromarray(np.asarray(mask))
    box = crop_region(mask, pad)
    if box is not None:
        return box
    return max(mask.width - pad, 0), max(mask.height - pad, 0), min(pad, mask.width), min(pad, mask.height)


def expand_crop_region(region: Region, processing_width: int, processing_height: int,
                       image_width: int, image_height: int) -> Region:
    """Grow ``region`` around its centre to the processing aspect ratio, moved
    back inside the picture where it sticks out (A1111). It is clipped where the
    picture is too small to hold it."""
    x1, y1, x2, y2 = region
    target_ratio = processing_width / processing_height
    if (x2 - x1) / (y2 - y1) > target_ratio:
        y1, y2 = _grow(y1, y2, int((x2 - x1) / target_ratio - (y2 - y1)), image_height)
    else:
        x1, x2 = _grow(x1, x2, int((y2 - y1) * target_ratio - (x2 - x1)), image_width)
    return x1, y1, x2, y2


def _grow(start: int, end: int, amount: int, limit: int) -> tuple[int, int]:
    start -= amount // 2
    end += amount - amount // 2
    if end > limit:
        start, end = start - (end - limit), limit
    if start < 0:
        start, end = 0, end - start
    return start, min(end, limit)


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": the masked area replaced by the colours around it,
    blurred ever less (A1111 masking.fill). Unmasked pixels are unchanged."""
    _same_size(image, mask, "fill")
    known = Image.new("RGBa", image.size)
    known.paste(image.convert("RGB").convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    # Blurring premultiplied colour spreads the known pixels into the hole
    # without the hole's black bleeding back in.
    result = Image.new("RGBA", image.size)
    for radius, repeats in _FILL_LAYERS:
        layer = known.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(layer)
    return result.convert("RGB")


def latent_mask(mask: Image.Image, latent_width: int, latent_height: int) -> torch.Tensor:
    """The mask at latent size as a (1, 1, h, w) float tensor of 0 and 1 (1 =
    repaint): resized (Pillow's default bicubic, as A1111) then rounded."""
    small = mask.convert("L").resize((latent_width, latent_height), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.around(np.asarray(small, dtype=np.float32) / 255))[None, None]


def sketch_mask(original: Image.Image, sketched: Image.Image, threshold: int = 0) -> Image.Image:
    """Inpaint sketch: "L" mask, white where any colour channel of ``sketched``
    differs from ``original`` by more than ``threshold``."""
    _same_size(original, sketched, "sketch_mask")
    before = np.asarray(original.convert("RGB"), dtype=np.int16)
    after = np.asarray(sketched.convert("RGB"), dtype=np.int16)
    changed = np.abs(after - before).max(axis=2) > threshold
    return Image.fromarray(changed.astype(np.uint8) * 255, "L")


# ---------------------------------------------------------------- pasting results back

def overlay(original: Image.Image, mask: Image.Image, region: Region | None = None) -> Image.Image:
    """RGBA: ``original`` where it must be kept (alpha = inverted mask), to put
    over results so that unmasked pixels come back exactly.

    Whole picture (``region`` None; original and mask at processing size): the
    mask counts double, as in A1111, so the original shows only where the blurred
    mask is under half strength. Only masked (``region`` given; full-size
    original and mask): the mask as it is."""
    _same_size(original, mask, "overlay")
    repaint = np.asarray(mask.convert("L"), dtype=np.uint16)
    if region is None:
        repaint = np.minimum(repaint * 2, 255)
    result = original.convert("RGB").convert("RGBA")
    result.putalpha(Image.fromarray((255 - repaint).astype(np.uint8), "L"))
    return result


def apply_overlay(result: Image.Image, overlay_image: Image.Image | None, region: Region | None = None,
                  canvas_size: tuple[int, int] | None = None) -> Image.Image:
    """The generated picture made final, RGB.

    Whole picture: ``result`` with ``overlay_image`` composited on top.
    Only masked (``region`` given): ``result`` (processing size) is fitted to the
    region (crop and resize, as A1111) and placed at it on a full-size canvas —
    the overlay's size, or ``canvas_size`` when there is no overlay (the rest of
    that canvas stays black) — then the overlay goes on top."""
    if region is not None:
        size = overlay_image.size if overlay_image is not None else canvas_size
        if size is None:
            raise ValueError("apply_overlay needs canvas_size for a region without an overlay")
        x1, y1, x2, y2 = region
        canvas = Image.new("RGBA", size)
        canvas.paste(resize_image(1, result.convert("RGB"), x2 - x1, y2 - y1), (x1, y1))
        result = canvas
    if overlay_image is None:
        return result.convert("RGB")
    _same_size(result, overlay_image, "apply_overlay")
    final = result.convert("RGBA")
    final.alpha_composite(overlay_image.convert("RGBA"))
    return final.convert("RGB")


def _same_size(a: Image.Image, b: Image.Image, where: str) -> None:
    if a.size != b.size:
        raise ValueError(f"{where}: sizes differ ({a.width}x{a.height} and {b.width}x{b.height})")


# ---------------------------------------------------------------- outpainting

def expand_canvas(image: Image.Image, *, left: int, right: int, up: int, down: int,
                  fill_mode: str = "edge", seed: int = 0, overlap: int = 8) -> tuple[Image.Image, Image.Image]:
    """Outpainting: (RGB canvas, "L" mask). The picture grows by the given
    pixels on each side, each grown axis rounded up to a multiple of 8 with the
    extra shared between its two sides in proportion (A1111's outpainting
    scripts do the same to 64). The new area is filled with the picture's edge
    pixels stretched outwards ("edge") or with noise of the picture's colours and
    texture ("noise", seeded: what Outpainting mk2 does). The mask is white over
    the new area and ``overlap`` pixels into the old picture on each grown side,
    so the seam is repainted too (A1111 uses its mask blur there)."""
    sides = {"left": left, "right": right, "up": up, "down": down, "overlap": overlap}
    for name, value in sides.items():
        if value < 0:
            raise ValueError(f"{name} must not be negative (got {value})")
    if fill_mode not in ("edge", "noise"):
        raise ValueError(f"fill_mode must be 'edge' or 'noise', got {fill_mode!r}")
    image = flatten(image)
    left, right = _round_up_to_8(image.width, left, right)
    up, down = _round_up_to_8(image.height, up, down)

    pixels = np.pad(np.asarray(image), ((up, down), (left, right), (0, 0)), mode="edge")
    new_area = np.ones(pixels.shape[:2], dtype=bool)
    new_area[up:up + image.height, left:left + image.width] = False
    if fill_mode == "noise" and new_area.any():
        pixels[new_area] = _matched_noise(pixels, new_area, seed)
    canvas = Image.fromarray(pixels, "RGB")

    mask = Image.new("L", canvas.size, 255)
    keep = (left + (overlap if left else 0), up + (overlap if up else 0),
            canvas.width - right - (overlap if right else 0), canvas.height - down - (overlap if down else 0))
    if keep[2] > keep[0] and keep[3] > keep[1]:
        mask.paste(0, keep)
    return canvas, mask


def _round_up_to_8(size: int, before: int, after: int) -> tuple[int, int]:
    if before + after == 0:
        return 0, 0
    extra = math.ceil((size + before + after) / 8) * 8 - size
    grown_before = before * extra // (before + after)
    return grown_before, extra - grown_before


def _matched_noise(pixels: np.ndarray, new_area: np.ndarray, seed: int) -> np.ndarray:
    """Colours for the pixels of ``new_area``: noise with the picture's
    brightness spectrum and random phases (so it has the picture's grain), its
    values then replaced rank for rank by the known pixels sorted by
    brightness, so only the picture's own colours appear, in its proportions."""
    rng = np.random.default_rng(seed)
    weights = np.array([0.299, 0.587, 0.114])
    known = pixels[~new_area]
    brightness = pixels.astype(np.float64) @ weights
    brightness[new_area] = brightness[~new_area].mean()  # the empty area must not add its own frequencies
    spectrum = np.abs(np.fft.fft2(brightness))
    noise = np.real(np.fft.ifft2(spectrum * np.exp(2j * np.pi * rng.random(spectrum.shape))))[new_area]
    by_brightness = known[np.argsort(known @ weights, kind="stable")]
    ranks = noise.argsort().argsort()
    return by_brightness[ranks * len(known) // len(noise)]


# ---------------------------------------------------------------- tiles (SD upscale, poor man's outpainting)

@dataclass
class Tile:
    x: int
    y: int
    image: Image.Image


@dataclass
class Tiles:
    """A picture cut into overlapping tiles, row by row. Replace ``tile.image``
    with a processed tile of the same size and ``combine_tiles`` puts them back."""
    tile_w: int
    tile_h: int
    overlap: int
    image_w: int
    image_h: int
    rows: list[list[Tile]]

    def __iter__(self) -> Iterator[Tile]:
        return (tile for row in self.rows for tile in row)


def split_tiles(image: Image.Image, tile_w: int, tile_h: int, overlap: int) -> Tiles:
    """A1111 split_grid: as few tiles as cover the picture with at least
    ``overlap`` shared pixels, spread evenly, the last flush with the edge. A
    picture smaller than a tile gives one tile padded with black."""
    if tile_w < 1 or tile_h < 1:
        raise ValueError(f"tile size must be positive (got {tile_w}x{tile_h})")
    if not 0 <= overlap < min(tile_w, tile_h):
        raise ValueError(f"overlap must be at least 0 and smaller than the tile (got {overlap})")
    xs = _tile_starts(image.width, tile_w, overlap)
    ys = _tile_starts(image.height, tile_h, overlap)
    rows = [[Tile(x, y, image.crop((x, y, x + tile_w, y + tile_h))) for x in xs] for y in ys]
    return Tiles(tile_w, tile_h, overlap, image.width, image.height, rows)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))  # >= 2 here
    return [i * (size - tile) // (count - 1) for i in range(count)]


def combine_tiles(tiles: Tiles) -> Image.Image:
    """The tiles put back into one picture of the original size, blending each
    overlap linearly from the earlier tile to the later one (A1111
    combine_grid). Takes the mode of the first tile."""
    mode = tiles.rows[0][0].image.mode
    for tile in tiles:
        if tile.image.size != (tiles.tile_w, tiles.tile_h):
            raise ValueError(f"tile at ({tile.x}, {tile.y}) is {tile.image.width}x{tile.image.height}, "
                             f"expected {tiles.tile_w}x{tiles.tile_h}")
    across = down = None
    if tiles.overlap:
        ramp = (np.arange(tiles.overlap, dtype=np.float32) * 255 / tiles.overlap).astype(np.uint8)
        across = Image.fromarray(np.tile(ramp, (tiles.tile_h, 1)), "L")
        down = Image.fromarray(np.tile(ramp[:, None], (1, tiles.image_w)), "L")

    result = Image.new(mode, (tiles.image_w, tiles.image_h))
    for row in tiles.rows:
        band = Image.new(mode, (tiles.image_w, tiles.tile_h))
        for tile in row:
            _paste_blended(band, tile.image.convert(mode), (tile.x, 0), across, horizontal=True)
        _paste_blended(result, band, (0, row[0].y), down, horizontal=False)
    return result


def _paste_blended(target: Image.Image, piece: Image.Image, at: tuple[int, int], ramp: Image.Image | None,
                   horizontal: bool) -> None:
    """Paste ``piece`` at ``at`` with its first columns (``horizontal``) or rows
    blended by ``ramp`` over what is already there. A piece at the left or top
    edge, or with no ramp (no overlap), pastes plainly."""
    x, y = at
    if ramp is None or (x if horizontal else y) == 0:
        target.paste(piece, at)
    elif horizontal:
        target.paste(piece.crop((0, 0, ramp.width, piece.height)), at, mask=ramp)
        target.paste(piece.crop((ramp.width, 0, piece.width, piece.height)), (x + ramp.width, y))
    else:
        target.paste(piece.crop((0, 0, piece.width, ramp.height)), at, mask=ramp)
        target.paste(piece.crop((0, ramp.height, piece.width, piece.height)), (x, y + ramp.height))
