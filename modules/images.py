"""Images in and out: A1111-style saving (atomic), grids, metadata, base64 and user files.

Saved files follow A1111's layout (reference §6.3): ``<dir>/YYYY-MM-DD/00012-3456789.png``.
The infotext goes where A1111 puts it (reference §4.1): the PNG text chunk
"parameters", or EXIF UserComment for JPEG/WebP.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import io
import math
import os
import secrets
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from modules.untrusted import user_files

MAX_METADATA_CHARS = 1024 * 1024  # longer text metadata is refused, not parsed
MAX_INPUT_PIXELS = 4096 * 4096    # the largest image a user may give, on every path
JPEG_QUALITY = 80  # A1111's jpeg_quality default

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\0"  # piexif's UserComment "unicode" encoding: prefix + UTF-16BE
_ASCII_PREFIX = b"ASCII\0\0\0"

_EXTENSION_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
# Formats accepted from users. Pillow can open many more (EPS runs Ghostscript),
# so the list is explicit.
_ALLOWED_INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")

# Guards choosing a file number and moving the file there, so two threads never
# pick the same name. Encoding happens outside the lock.
_save_lock = threading.Lock()


# ---------------------------------------------------------------- saving

def cap_decoding(max_pixels: int = MAX_INPUT_PIXELS) -> None:
    """Make Pillow itself refuse an image over `max_pixels` when it opens the header, before any decoding, in all
    code: Gradio's components open uploads with Pillow outside ours (a 13000² PNG of 164 KB took 24 s and 3 GB).
    Pillow raises DecompressionBombError only above twice MAX_IMAGE_PIXELS (and merely warns above it), so that is
    set to half the cap and the warning silenced."""
    Image.MAX_IMAGE_PIXELS = max_pixels // 2
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def next_sequence_number(folder: str | Path, basename: str = "") -> int:
    """A1111 ``get_next_sequence_number``: 1 + the largest leading integer among
    the names in ``folder`` (after ``basename-`` when a basename is given); 0
    for an empty folder."""
    prefix = f"{basename}-" if basename else ""
    result = -1
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(prefix):
            head = os.path.splitext(name[len(prefix):])[0].split("-")[0]
            if head.isascii() and head.isdigit():
                result = max(result, int(head))
    return result + 1


def _png_info(image: Image.Image, infotext: str | None) -> PngImagePlugin.PngInfo:
    """Text chunks to write: the image's own string entries (as A1111 keeps
    them), with "parameters" replaced by ``infotext`` when one is given."""
    texts = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    if infotext is not None:
        texts["parameters"] = infotext
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)  # becomes iTXt when not Latin-1
    return info


def _exif_with_comment(infotext: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE_PREFIX + infotext.encode("utf-16-be")
    return exif.tobytes()


def _encode(image: Image.Image, fmt: str, infotext: str | None, quality: int) -> tuple[bytes, bool]:
    """Encode to bytes. Returns (data, whether the infotext is inside)."""
    out = io.BytesIO()
    if fmt == "PNG":
        if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
            image = to_rgb_or_rgba(image)
        image.save(out, "PNG", pnginfo=_png_info(image, infotext))
        return out.getvalue(), True

    image = to_rgb_or_rgba(image)
    if fmt == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")  # JPEG has no alpha (A1111 converts too)
    if infotext is None:
        image.save(out, fmt, quality=quality)
        return out.getvalue(), True
    try:
        image.save(out, fmt, quality=quality, exif=_exif_with_comment(infotext))
        return out.getvalue(), True
    except ValueError:
        # JPEG's EXIF segment holds at most 64 KiB (~32k characters of UTF-16).
        # Keep the image; the caller writes the infotext to a .txt beside it.
        out = io.BytesIO()
        image.save(out, fmt, quality=quality)
        return out.getvalue(), False


def _write_temp(folder: Path, data: bytes) -> Path:
    """Write ``data`` to a new hidden temp file in ``folder`` and fsync it, so a
    later rename publishes a complete file. The temp file is removed on error."""
    temp = folder / f".{secrets.token_hex(8)}.tmp"
    # O_EXCL: never reuse a name; 0o666 so the final file gets the usual umask
    # permissions (mkstemp would make it 0600).
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def replace_atomically(path: Path, data: bytes) -> None:
    """Write `data` as `path` (replacing it) so that a reader sees the old file or the new one, never half of
    it: a temp file beside it, fsynced, then renamed. For the Save button's log.csv and zip."""
    temp = _write_temp(path.parent, data)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _publish(folder: Path, temp: Path, namer: "_Namer") -> Path:
    """Move ``temp`` to the first free numbered name; never replaces a file."""
    try:
        with _save_lock:
            number = namer.start(folder)
            while (folder / namer(number)).exists():  # e.g. another process got there first
                number += 1
            final = folder / namer(number)
            os.replace(temp, final)
        return final
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_new(folder: Path, data: bytes, namer) -> Path:
    """Write `data` atomically under the first free name `namer` gives (`namer.start(folder)`, then `namer(n)` for
    n upwards), never replacing a file: the numbered saves' way, for any file (the Save buttons' zip)."""
    return _publish(folder, _write_temp(folder, data), namer)


class _Namer:
    """File names for one save: ``NNNNN-SEED.ext`` or ``grid-NNNN.ext``."""

    def __init__(self, basename: str, decoration: str, extension: str):
        self.basename, self.decoration, self.extension = basename, decoration, extension

    def start(self, folder: Path) -> int:
        return next_sequence_number(folder, self.basename)

    def __call__(self, number: int) -> str:
        stem = f"{number:05}" if not self.basename else f"{self.basename}-{number:04}"
        return f"{stem}{self.decoration}.{self.extension}"


def _save(image: Image.Image, directory: str | Path, namer: _Namer, infotext: str | None,
          save_to_dirs: bool, date: datetime.date | None, quality: int) -> Path:
    fmt = _EXTENSION_FORMATS.get(namer.extension.lower())
    if fmt is None:
        raise ValueError(f"unsupported image extension {namer.extension!r}; use one of {sorted(_EXTENSION_FORMATS)}")
    folder = Path(directory)
    if save_to_dirs:
        folder = folder / (date or datetime.date.today()).isoformat()
    folder.mkdir(parents=True, exist_ok=True)

    data, info_inside = _encode(image, fmt, infotext, quality)
    final = _publish(folder, _write_temp(folder, data), namer)
    if not info_inside:
        # A1111's save_txt layout: the infotext next to the image, same stem.
        temp = _write_temp(folder, f"{infotext}\n".encode("utf-8"))
        try:
            os.replace(temp, final.with_suffix(".txt"))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    return final


def save_image(image: Image.Image, directory: str | Path, *, seed: int, infotext: str | None,
               extension: str = "png", save_to_dirs: bool = True,
               date: datetime.date | None = None, quality: int = JPEG_QUALITY) -> Path:
    """Save like A1111 with its defaults (save_to_dirs, "[date]" folders, "[seed]"
    pattern): ``directory/YYYY-MM-DD/NNNNN-SEED.png``. The file appears
    atomically (temp file, fsync, rename) and never overwrites another."""
    return _save(image, directory, _Namer("", f"-{seed}", extension), infotext, save_to_dirs, date, quality)


def save_grid(grid: Image.Image, directory: str | Path, *, infotext: str | None,
              extension: str = "png", save_to_dirs: bool = True,
              date: datetime.date | None = None, quality: int = JPEG_QUALITY) -> Path:
    """Save a grid as A1111 1.10 does with its defaults:
    ``images.save_image(grid, outpath_grids, "grid", ..., short_filename=True)``
    (grid_extended_filename is off) gives ``grid-NNNN.png`` -- a 4-digit counter
    over the ``grid-*`` files only, no seed -- in a dated folder
    (grid_save_to_dirs is on)."""
    return _save(grid, directory, _Namer("grid", "", extension), infotext, save_to_dirs, date, quality)


def save_numbered(image: Image.Image, directory: str | Path, *, basename: str = "", infotext: str | None,
                  extension: str = "png", quality: int = JPEG_QUALITY) -> Path:
    """Save as A1111's Extras does (no date folder, no seed): ``NNNNN.png``, or ``<basename>-NNNN.png``."""
    return _save(image, directory, _Namer(basename, "", extension), infotext, False, None, quality)


def make_grid(images: list[Image.Image], rows: int | None = None) -> Image.Image:
    """A1111 ``image_grid`` with its default settings (n_rows = -1): rows =
    round(sqrt(n)), as many columns as needed, cells the size of the first
    image, black background, filled row by row."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    if rows is None:
        rows = round(math.sqrt(len(images)))
    rows = max(1, min(rows, len(images)))
    cols = math.ceil(len(images) / rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "black")
    for i, img in enumerate(images):
        grid.paste(img, (i % cols * w, i // cols * h))
    return grid


# ---------------------------------------------------------------- metadata

def _decode_user_comment(raw: bytes) -> str:
    """piexif ``UserComment.load``, with A1111's fallback for unknown prefixes."""
    head, body = raw[:8], raw[8:]
    if head == _UNICODE_PREFIX:
        if body[:2] == b"\xff\xfe":  # some writers use little-endian with a BOM
            return body[2:].decode("utf-16-le", errors="replace")
        return body.decode("utf-16-be", errors="replace")
    if head == _ASCII_PREFIX:
        return body.decode("ascii", errors="replace")
    return raw.decode("utf-8", errors="ignore")


def _exif_comment(image: Image.Image) -> str | None:
    try:
        raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:  # malformed EXIF is common; it just means "no comment"
        return None
    if isinstance(raw, str):
        return raw or None
    if isinstance(raw, bytes) and raw:
        return _decode_user_comment(raw).rstrip("\0") or None
    return None


def read_info(image: Image.Image) -> tuple[str | None, dict[str, str]]:
    """(infotext or None, other text metadata), like A1111 ``read_info_from_image``:
    the PNG "parameters" chunk, else the EXIF UserComment, else a GIF comment.
    Raises ValueError("metadata too large") when the text exceeds 1 MiB."""
    items: dict[str, str] = {}
    for key, value in image.info.items():
        if isinstance(key, str) and isinstance(value, str):
            items[key] = value
    comment = image.info.get("comment")
    if isinstance(comment, bytes):  # GIF/JPEG comments come as bytes
        items["comment"] = comment.decode("utf-8", errors="ignore")

    if sum(len(k) + len(v) for k, v in items.items()) > MAX_METADATA_CHARS:
        raise ValueError("metadata too large")

    parameters = items.pop("parameters", None)
    if parameters is None:
        parameters = _exif_comment(image)
        if parameters is not None and len(parameters) > MAX_METADATA_CHARS:
            raise ValueError("metadata too large")
    if parameters is None and "comment" in items:  # GIF (A1111 takes any "comment")
        parameters = items.pop("comment")
    return parameters, items


def image_to_png_bytes(image: Image.Image, infotext: str | None) -> bytes:
    """PNG bytes with the "parameters" chunk (A1111's API output encoding);
    with infotext None the image's own "parameters" entry, if any, is kept."""
    return _encode(image, "PNG", infotext, JPEG_QUALITY)[0]


def encode_base64_png(image: Image.Image, infotext: str | None) -> str:
    """Base64 (no data: prefix, as A1111's API returns) of ``image_to_png_bytes``."""
    return base64.b64encode(image_to_png_bytes(image, infotext)).decode("ascii")


# ---------------------------------------------------------------- decoding user images

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
