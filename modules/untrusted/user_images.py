"""Images users hand us (base64 from the API, uploads, files in a folder they name), decoded with limits: only
the formats listed, the pixel count checked from the header before any pixel is decoded, the first frame, upright,
RGB or RGBA. Errors are ValueErrors with a message fit for the user. (`modules.images` re-exports these names.)"""
from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from modules.untrusted import user_files

MAX_INPUT_PIXELS = 4096 * 4096    # the largest image a user may give, on every path

# Formats accepted from users. Pillow can open many more (EPS runs Ghostscript),
# so the list is explicit.
_ALLOWED_INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")


def cap_decoding(max_pixels: int = MAX_INPUT_PIXELS) -> None:
    """Make Pillow itself refuse an image over `max_pixels` when it opens the header, before any decoding, in all
    code: Gradio's components open uploads with Pillow outside ours (a 13000² PNG of 164 KB took 24 s and 3 GB).
    Pillow raises DecompressionBombError only above twice MAX_IMAGE_PIXELS (and merely warns above it), so that is
    set to half the cap and the warning silenced."""
    Image.MAX_IMAGE_PIXELS = max_pixels // 2
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    """RGBA when the image has transparency, else RGB. 16/32-bit greyscale is
    scaled down to 8 bits rather than clipped (clipping turns it white)."""
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image
    if mode.startswith("I;16") or mode == "I":
        pixels = np.asarray(image.convert("I"), dtype=np.int64)
        pixels = np.clip(pixels, 0, 65535) // 257  # 0..65535 -> 0..255
        out = Image.fromarray(pixels.astype(np.uint8), "L").convert("RGB")
        out.info = dict(image.info)
        return out
    if mode == "F":
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float32))
        out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").convert("RGB")
        out.info = dict(image.info)
        return out
    has_alpha = mode in ("LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in image.info)
    return image.convert("RGBA" if has_alpha else "RGB")


def decode_base64_image(data: str, *, max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """Decode a base64 image from a user (raw base64 or a data: URI) into an
    upright RGB/RGBA image (first frame if animated). Raises ValueError with a
    message fit for the user on anything else. The pixel count is checked from
    the header, before any pixel is decoded. URLs are refused, not fetched."""
    if not isinstance(data, str):
        raise ValueError("image must be a base64 string")
    text = data.strip()
    if text[:8].lower().startswith(("http://", "https://")):
        raise ValueError("URL images are not supported; send the image as base64")
    if text[:5].lower() == "data:":
        header, sep, text = text.partition(",")
        if not sep or not header.lower().endswith(";base64"):
            raise ValueError("data URI must be base64-encoded (data:image/...;base64,...)")
    text = "".join(text.split())  # base64 wrapped over lines is fine
    if not text:
        raise ValueError("image data is empty")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image data is not valid base64") from None

    return decode_image_bytes(raw, max_pixels=max_pixels)


def decode_image_bytes(data: bytes, *, max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """An encoded image from a user (the bytes of a file, or a download), with the checks above."""
    return _decode(io.BytesIO(data), max_pixels)


def load_image_file(path: str | Path, *, max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """An image file from a user's folder (img2img batch from directory), with
    the same checks and conversions as ``decode_base64_image``. Raises
    ValueError with a message naming the file."""
    path = Path(path)
    try:
        with user_files.open_regular(path, "rb") as f:
            return _decode(f, max_pixels)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except OSError as exc:  # missing, unreadable, a folder
        raise ValueError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def check_user_image(image: Image.Image, *, max_pixels: int = MAX_INPUT_PIXELS, what: str = "image") -> Image.Image:
    """An image that arrived already opened (from the UI) made like a decoded one:
    refused when over ``max_pixels``, first frame, upright, RGB or RGBA.
    Raises ValueError naming ``what`` (e.g. "mask")."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"{what} is not an image")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ValueError(f"{what} has no pixels")
    if width * height > max_pixels:
        raise ValueError(f"{what} is {width}x{height}, more than the limit of {max_pixels} pixels")
    try:
        return _first_frame_upright(image)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _decode(fp: BinaryIO, max_pixels: int) -> Image.Image:
    """The one decoding path for user images: header checks, then pixels."""
    return _first_frame_upright(_open_within_limit(fp, max_pixels))


def _first_frame_upright(image: Image.Image) -> Image.Image:
    """Load the first frame, apply the EXIF orientation and convert to RGB/RGBA;
    decoding errors become ValueError."""
    try:
        image.seek(0)  # animated: first frame only
        image.load()
        image = ImageOps.exif_transpose(image)
    except ValueError as exc:
        if "MAX_TEXT_CHUNK" in str(exc) or "text chunks" in str(exc):  # text after the pixels
            raise ValueError("metadata too large") from None
        raise ValueError(f"could not decode image: {exc}") from None
    except (OSError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise ValueError(f"could not decode image: {exc}") from None
    return to_rgb_or_rgba(image)


def _open_within_limit(fp: BinaryIO, max_pixels: int) -> Image.Image:
    """Image.open (header only) restricted to the allowed formats, refusing
    images with more than ``max_pixels`` before their pixels are decoded."""
    Image.init()
    formats = [f for f in _ALLOWED_INPUT_FORMATS if f in Image.OPEN]
    try:
        image = Image.open(fp, formats=formats)
    except UnidentifiedImageError:
        raise ValueError(f"not a supported image (accepted: {', '.join(formats)})") from None
    except Image.DecompressionBombError:
        raise ValueError(f"image is too large (more than the limit of {max_pixels} pixels)") from None
    except ValueError as exc:
        if "MAX_TEXT_CHUNK" in str(exc) or "text chunks" in str(exc):
            raise ValueError("metadata too large") from None
        raise ValueError(f"could not decode image: {exc}") from None
    except (OSError, SyntaxError, EOFError) as exc:
        raise ValueError(f"could not decode image: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ValueError("image has no pixels")
    if width * height > max_pixels:
        raise ValueError(f"image is {width}x{height}, more than the limit of {max_pixels} pixels")
    return image
