"""Images in and out: A1111-style saving (atomic), grids, metadata and base64; A1111's `modules.images` names for
extensions (`save_image` with A1111's arguments, `read_info_from_image`, `resize_image`, ...); the decoding of
images users hand us lives in `untrusted/user_images.py` and is re-exported here.

Saved files follow A1111's layout (reference §6.3): ``<dir>/YYYY-MM-DD/00012-3456789.png``.
The infotext goes where A1111 puts it (reference §4.1): the PNG text chunk
"parameters", or EXIF UserComment for JPEG/WebP.
"""
from __future__ import annotations

import base64
import datetime
import io
import math
import os
import secrets
import threading
from pathlib import Path

from PIL import Image, PngImagePlugin

from modules import masking
from modules.addons import running
from modules.output import filenames
from modules.untrusted.user_images import (  # noqa: F401 - the image decoding callers reach through modules.images
    MAX_INPUT_PIXELS, cap_decoding, check_user_image, decode_base64_image, decode_image_bytes, load_image_file,
    to_rgb_or_rgba,
)

MAX_METADATA_CHARS = 1024 * 1024  # longer text metadata is refused, not parsed
JPEG_QUALITY = 80  # A1111's jpeg_quality default

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\0"  # piexif's UserComment "unicode" encoding: prefix + UTF-16BE
_ASCII_PREFIX = b"ASCII\0\0\0"

_EXTENSION_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}

# Guards choosing a file number and moving the file there, so two threads never
# pick the same name. Encoding happens outside the lock.
_save_lock = threading.Lock()


# ---------------------------------------------------------------- saving

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


def _png_info(image: Image.Image, infotext: str | None, section: str = "parameters",
              extra: dict | None = None) -> PngImagePlugin.PngInfo:
    """Text chunks to write: the image's own string entries (as A1111 keeps
    them) and ``extra``, with ``section`` ("parameters") replaced by ``infotext`` when one is given."""
    texts = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    texts.update({str(k): str(v) for k, v in (extra or {}).items()})
    if infotext is not None:
        texts[section] = infotext
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)  # becomes iTXt when not Latin-1
    return info


def _exif_with_comment(infotext: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE_PREFIX + infotext.encode("utf-16-be")
    return exif.tobytes()


def _encode(image: Image.Image, fmt: str, infotext: str | None, quality: int, section: str = "parameters",
            extra: dict | None = None) -> tuple[bytes, bool]:
    """Encode to bytes. Returns (data, whether the infotext is inside). PNG: the infotext in the text chunk
    ``section`` beside ``extra``'s chunks; JPEG/WebP: in the EXIF UserComment."""
    out = io.BytesIO()
    if fmt == "PNG":
        if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
            image = to_rgb_or_rgba(image)
        image.save(out, "PNG", pnginfo=_png_info(image, infotext, section, extra))
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


_A1111_CALL = object()   # `infotext` not given: save_image was called with A1111's arguments


def save_image(image: Image.Image, path: str | Path, basename: str = "", seed: int | None = None,
               prompt: str | None = None, extension: str = "png", info: str | None = None,
               short_filename: bool = False, no_prompt: bool = False, grid: bool = False,
               pnginfo_section_name: str = "parameters", p=None, existing_info: dict | None = None,
               forced_filename: str | None = None, suffix: str = "", save_to_dirs: bool | None = None, *,
               infotext=_A1111_CALL, date: datetime.date | None = None, quality: int = JPEG_QUALITY):
    """Two callers, one name. The project's saving passes `infotext=` (keyword only): the image is saved like A1111
    with its defaults (save_to_dirs, "[date]" folders, "[seed]" pattern) as ``path/YYYY-MM-DD/NNNNN-SEED.png``,
    atomically (temp file, fsync, rename), never overwriting another, and the Path is returned.

    Extensions call it with A1111's arguments (`info` the infotext, `p`, `basename`, `suffix`, ...): it then does
    what A1111's does, following the running server's settings (`_save_as_a1111`), and returns A1111's
    (fullfn, txt_fullfn)."""
    if infotext is _A1111_CALL:
        return _save_as_a1111(image, path, basename, seed, prompt, extension, info, short_filename, no_prompt, grid,
                              pnginfo_section_name, p, existing_info, forced_filename, suffix, save_to_dirs)
    return _save(image, path, _Namer("", f"-{seed}", extension), infotext,
                 True if save_to_dirs is None else save_to_dirs, date, quality)


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


def encode_as(image: Image.Image, extension: str, infotext: str | None, quality: int = JPEG_QUALITY) -> bytes:
    """The bytes of `image` as a png, jpg or webp file, the infotext inside as saving puts it (None: for a PNG the
    image's own "parameters" entry, if any, is kept)."""
    fmt = _EXTENSION_FORMATS.get(extension.lower())
    if fmt is None:
        raise ValueError(f"unsupported image extension {extension!r}; use one of {sorted(_EXTENSION_FORMATS)}")
    return _encode(image, fmt, infotext, quality)[0]


def encode_base64_png(image: Image.Image, infotext: str | None) -> str:
    """Base64 (no data: prefix, as A1111's API returns) of ``image_to_png_bytes``."""
    return base64.b64encode(image_to_png_bytes(image, infotext)).decode("ascii")


# ---------------------------------------------------------------- A1111's `modules.images` names for extensions

get_next_sequence_number = next_sequence_number
FilenameGenerator = filenames.FilenameGenerator
sanitize_filename_part = filenames.sanitize_filename_part


def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """A1111's: rows from the setting n_rows (-1 automatic, 0 = batch_size), cells the size of the largest
    picture with smaller ones centred, on the grid_background_color."""
    if not imgs:
        raise ValueError("image_grid needs at least one image")
    if rows is None:
        setting = _setting("n_rows", -1)
        if setting > 0:
            rows = setting
        elif setting == 0:
            rows = batch_size
        elif _setting("grid_prevent_empty_spots", False):
            rows = math.floor(math.sqrt(len(imgs)))
            while len(imgs) % rows:
                rows -= 1
        else:
            rows = round(math.sqrt(len(imgs)))
    rows = max(1, min(rows, len(imgs)))
    cols = math.ceil(len(imgs) / rows)
    w, h = map(max, zip(*(img.size for img in imgs)))
    grid = Image.new("RGB", (cols * w, rows * h), _setting("grid_background_color", "#ffffff"))
    for i, img in enumerate(imgs):
        grid.paste(img, (i % cols * w + (w - img.width) // 2, i // cols * h + (h - img.height) // 2))
    return grid


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict[str, str]]:
    """A1111's name for `read_info`: (infotext or None, the other text metadata)."""
    return read_info(image)


def flatten(img: Image.Image, bgcolor: str) -> Image.Image:
    """A1111's: transparency over `bgcolor` ("#ffffff"), an RGB image."""
    return masking.flatten(img, bgcolor)


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int, upscaler_name: str | None = None):
    """A1111's: 0 just resize, 1 crop and resize, 2 (or more) resize and fill; an enlargement goes through
    `upscaler_name` (default: the upscaler_for_img2img setting), a name from the Upscalers list, else Lanczos."""
    upscale = None
    server = _server()
    upscalers = server.upscalers if server is not None else None
    name = upscaler_name or _setting("upscaler_for_img2img", None)
    if upscalers is not None and name and name != "None":
        found = upscalers.find(name)
        if found is None:
            raise ValueError(f"could not find upscaler named {name}")
        upscale = lambda picture, scale: upscalers.upscale(picture, scale, found)   # noqa: E731
    return masking.resize_image(min(int(resize_mode), 2), im, width, height, upscale)


def _server():
    try:
        return running.services()
    except RuntimeError:   # not started (a test, a tool): settings take A1111's defaults, no callbacks
        return None


def _setting(key: str, default):
    server = _server()
    return getattr(server.options, key, default) if server is not None else default


def save_image_with_geninfo(image: Image.Image, geninfo: str | None, filename: str | Path, extension: str | None = None,
                            existing_pnginfo: dict | None = None, pnginfo_section_name: str = "parameters") -> None:
    """A1111's: write `image` as `filename` (replaced if it exists) with the infotext inside (PNG text chunk
    `pnginfo_section_name` beside `existing_pnginfo`'s, JPEG/WebP EXIF), unless the setting enable_pnginfo is off."""
    extension = (extension or os.path.splitext(str(filename))[1]).lstrip(".").lower()
    fmt = _EXTENSION_FORMATS.get(extension)
    if fmt is None:
        raise ValueError(f"unsupported image extension {extension!r}; use one of {sorted(_EXTENSION_FORMATS)}")
    embed = _setting("enable_pnginfo", True)
    data, _ = _encode(image, fmt, geninfo if embed else None, _setting("jpeg_quality", JPEG_QUALITY),
                      pnginfo_section_name, existing_pnginfo if embed else None)
    replace_atomically(Path(filename), data)


def _save_as_a1111(image, path, basename, seed, prompt, extension, info, short_filename, no_prompt, grid,
                   section, p, existing_info, forced_filename, suffix, save_to_dirs) -> tuple[str, str | None]:
    """A1111's save_image: folder and name from its settings' patterns (a relative `path` is under the data folder,
    as the web UI's own output folders), the image-saved callbacks around the write, a .txt beside the image with
    the setting save_txt."""
    fmt = _EXTENSION_FORMATS.get(extension.lower())
    if fmt is None:
        raise ValueError(f"unsupported image extension {extension!r}; use one of {sorted(_EXTENSION_FORMATS)}")
    names = FilenameGenerator(p, seed, prompt, image, basename=basename)
    if save_to_dirs is None:
        save_to_dirs = (grid and _setting("grid_save_to_dirs", True)) or \
                       (not grid and _setting("save_to_dirs", True) and not no_prompt)
    server = _server()
    folder = Path(path)
    if server is not None and not folder.is_absolute():   # A1111's outdir settings are relative: to the data folder
        folder = server.paths.data / folder
    if save_to_dirs:
        pattern = _setting("directories_filename_pattern", "") or "[prompt_words]"
        folder /= names.apply(pattern).lstrip(" ").rstrip("\\ /")
    folder.mkdir(parents=True, exist_ok=True)
    pattern = _setting("samples_filename_pattern", "")
    decoration = "" if short_filename or seed is None else (pattern or ("[seed]" if _setting("save_to_dirs", True)
                                                                        else "[seed]-[prompt_spaces]"))
    decoration = names.apply(decoration) + suffix
    numbered = forced_filename is None and (_setting("save_images_add_number", True) or decoration == "")
    namer = _Namer(basename, f"-{decoration}" if decoration else "", extension)
    if forced_filename is not None:
        planned = folder / f"{forced_filename}.{extension}"
    elif numbered:
        planned = folder / namer(namer.start(folder))
    else:
        planned = folder / f"{decoration}.{extension}"

    from modules.script_callbacks import ImageSaveParams

    params = ImageSaveParams(image, p, str(planned), dict(existing_info or {}))
    if info is not None:
        params.pnginfo[section] = info
    if server is not None:
        server.scripts.callbacks.before_image_saved(params)
    info = params.pnginfo.get(section)
    extra = {key: value for key, value in params.pnginfo.items() if key != section}
    embed = _setting("enable_pnginfo", True)
    data, _ = _encode(params.image, fmt, info if embed else None, _setting("jpeg_quality", JPEG_QUALITY), section,
                      extra if embed else None)
    if numbered and params.filename == str(planned):   # the first free number when written, as the core's saves
        params.filename = str(write_new(folder, data, namer))
    else:
        Path(params.filename).parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(Path(params.filename), data)
    text_file = None
    if _setting("save_txt", False) and info is not None:
        text_file = os.path.splitext(params.filename)[0] + ".txt"
        replace_atomically(Path(text_file), f"{info}\n".encode("utf-8"))
    if server is not None:
        server.scripts.callbacks.image_saved(params)
    return params.filename, text_file
