"""Saving (A1111 names, atomic), grids, metadata round trips, decoding user images."""
import base64
import datetime
import errno
import io
import os
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from modules import images
from modules.images import (
    decode_base64_image, encode_base64_png, image_to_png_bytes, make_grid, read_info, save_grid,
    save_image,
)
from tests.fixtures.png_bombs import png_declaring

INFOTEXT = 'a cat, "quoted"\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, Seed: 1234, Lora hashes: "x: 1, y: 2"'
DAY = datetime.date(2024, 7, 27)


def rgb(color="red", size=(16, 8)):
    return Image.new("RGB", size, color)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encoded(image, fmt, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def files_in(folder):
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------- saving

def test_save_names_like_a1111(tmp_path):
    first = save_image(rgb(), tmp_path, seed=1234, infotext=INFOTEXT, date=DAY)
    second = save_image(rgb(), tmp_path, seed=99, infotext=INFOTEXT, date=DAY)
    assert first == tmp_path / "2024-07-27" / "00000-1234.png"
    assert second == tmp_path / "2024-07-27" / "00001-99.png"
    assert files_in(tmp_path / "2024-07-27") == ["00000-1234.png", "00001-99.png"]


def test_counter_continues_after_existing_files(tmp_path):
    folder = tmp_path / DAY.isoformat()
    folder.mkdir()
    for name in ("00041-7.png", "00003-1.jpg", "notes.txt", "grid-0099.png", ".hidden.tmp", "12abc.png"):
        (folder / name).write_bytes(b"")
    assert save_image(rgb(), tmp_path, seed=5, infotext=None, date=DAY).name == "00042-5.png"


def test_without_dated_folder(tmp_path):
    path = save_image(rgb(), tmp_path, seed=3, infotext=None, save_to_dirs=False)
    assert path == tmp_path / "00000-3.png"


def test_default_date_is_today(tmp_path):
    path = save_image(rgb(), tmp_path, seed=3, infotext=None)
    assert path.parent.name == datetime.date.today().isoformat()


def test_png_parameters_chunk_and_other_text_kept(tmp_path):
    image = rgb()
    image.info["Software"] = "test-suite"
    path = save_image(image, tmp_path, seed=1, infotext=INFOTEXT, date=DAY)
    with Image.open(path) as saved:
        assert saved.text["parameters"] == INFOTEXT
        parameters, items = read_info(saved)
    assert parameters == INFOTEXT
    assert items == {"Software": "test-suite"}


def test_png_non_latin_infotext(tmp_path):
    text = "猫, ünïcode\nSteps: 1, Seed: 2, Size: 8x8"
    path = save_image(rgb(), tmp_path, seed=1, infotext=text, date=DAY)
    with Image.open(path) as saved:
        assert read_info(saved)[0] == text


@pytest.mark.parametrize("extension, fmt", [("jpg", "JPEG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_exif_user_comment_roundtrip(tmp_path, extension, fmt):
    text = INFOTEXT + ", Note: 猫"
    image = Image.new("RGBA", (16, 8), (255, 0, 0, 128))
    path = save_image(image, tmp_path, seed=7, infotext=text, extension=extension, date=DAY)
    assert path.name == f"00000-7.{extension}"
    with Image.open(path) as saved:
        assert saved.format == fmt
        raw = saved.getexif().get_ifd(0x8769)[0x9286]
        assert raw.startswith(b"UNICODE\0")  # piexif's "unicode" layout, as A1111 writes it
        assert read_info(saved)[0] == text


def test_jpeg_infotext_too_long_for_exif_goes_to_txt(tmp_path):
    text = "p" * 40_000 + "\nSteps: 1, Seed: 2, Size: 8x8"
    path = save_image(rgb(), tmp_path, seed=2, infotext=text, extension="jpg", date=DAY)
    assert path.exists()
    assert path.with_suffix(".txt").read_text(encoding="utf-8") == text + "\n"
    assert not [n for n in files_in(path.parent) if n.endswith(".tmp")]


def test_unsupported_extension(tmp_path):
    with pytest.raises(ValueError, match="unsupported image extension"):
        save_image(rgb(), tmp_path, seed=1, infotext=None, extension="svg")


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, failing):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images.os, failing, disk_full)
    with pytest.raises(OSError) as info:
        save_image(rgb(), tmp_path, seed=1, infotext=INFOTEXT, date=DAY)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert files_in(tmp_path / DAY.isoformat()) == []


def test_failed_encode_leaves_nothing(tmp_path, monkeypatch):
    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError):
        save_image(rgb(), tmp_path, seed=1, infotext=INFOTEXT, date=DAY)
    monkeypatch.undo()
    assert files_in(tmp_path / DAY.isoformat()) == []


def test_existing_file_is_never_overwritten(tmp_path, monkeypatch):
    folder = tmp_path / DAY.isoformat()
    folder.mkdir()
    (folder / "00000-1.png").write_bytes(b"someone else's")
    # Another process wrote 00000-1.png but the directory listing missed it.
    monkeypatch.setattr(images, "next_sequence_number", lambda *a, **k: 0)
    path = save_image(rgb(), tmp_path, seed=1, infotext=None, date=DAY)
    assert path.name == "00001-1.png"
    assert (folder / "00000-1.png").read_bytes() == b"someone else's"


def test_concurrent_saves_get_distinct_names(tmp_path):
    results, errors = [], []

    def worker(seed):
        try:
            for _ in range(5):
                results.append(save_image(rgb(), tmp_path, seed=seed, infotext=INFOTEXT, date=DAY))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 40
    numbers = sorted(int(p.name.split("-")[0]) for p in results)
    assert numbers == list(range(40))
    assert len(files_in(tmp_path / DAY.isoformat())) == 40


def test_save_grid_names(tmp_path):
    save_image(rgb(), tmp_path, seed=1, infotext=None, date=DAY)
    first = save_grid(rgb(), tmp_path, infotext=INFOTEXT, date=DAY)
    second = save_grid(rgb(), tmp_path, infotext=INFOTEXT, date=DAY)
    assert (first.name, second.name) == ("grid-0000.png", "grid-0001.png")
    assert save_image(rgb(), tmp_path, seed=2, infotext=None, date=DAY).name == "00001-2.png"
    with Image.open(first) as saved:
        assert read_info(saved)[0] == INFOTEXT


# ---------------------------------------------------------------- grids

@pytest.mark.parametrize("count, cols, rows", [
    (1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 2, 2), (5, 3, 2), (6, 3, 2), (7, 3, 3), (8, 3, 3), (9, 3, 3),
])
def test_grid_layout(count, cols, rows):
    tiles = [rgb((i * 20, 0, 0), size=(10, 20)) for i in range(count)]
    grid = make_grid(tiles)
    assert grid.size == (cols * 10, rows * 20)
    assert grid.mode == "RGB"
    last = count - 1
    assert grid.getpixel((last % cols * 10 + 5, last // cols * 20 + 5)) == (last * 20, 0, 0)
    if count < cols * rows:  # empty cells stay black
        assert grid.getpixel((grid.width - 1, grid.height - 1)) == (0, 0, 0)


def test_grid_explicit_rows_and_empty():
    assert make_grid([rgb(size=(4, 4))] * 4, rows=1).size == (16, 4)
    with pytest.raises(ValueError):
        make_grid([])


# ---------------------------------------------------------------- metadata

def test_png_bytes_and_base64_carry_parameters():
    data = image_to_png_bytes(rgb(), INFOTEXT)
    with Image.open(io.BytesIO(data)) as image:
        assert read_info(image)[0] == INFOTEXT
    decoded = decode_base64_image(encode_base64_png(rgb(), INFOTEXT))
    assert read_info(decoded)[0] == INFOTEXT


def test_png_bytes_keep_own_parameters_when_none_given():
    image = rgb()
    image.info["parameters"] = "from the image\nSteps: 1, Seed: 1, Size: 1x1"
    with Image.open(io.BytesIO(image_to_png_bytes(image, None))) as saved:
        assert read_info(saved)[0] == image.info["parameters"]


def test_read_info_gif_comment_and_nothing():
    gif = encoded(Image.new("P", (4, 4)), "GIF", comment=b"gif params\nSteps: 1, Seed: 1, Size: 4x4")
    with Image.open(io.BytesIO(gif)) as image:
        assert read_info(image)[0] == "gif params\nSteps: 1, Seed: 1, Size: 4x4"
    assert read_info(rgb()) == (None, {})


def test_read_info_refuses_huge_metadata():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "x" * (2 * 1024 * 1024))  # Pillow itself allows this
    with Image.open(io.BytesIO(encoded(rgb(), "PNG", pnginfo=info))) as image:
        with pytest.raises(ValueError, match="metadata too large"):
            read_info(image)


# ---------------------------------------------------------------- decoding

def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("image.png", b"not really")
    return out.getvalue()


@pytest.mark.parametrize("data, message", [
    (b64(b"<!DOCTYPE html><html><script>alert(1)</script></html>"), "not a supported image"),
    (b64(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'), "not a supported image"),
    ("data:image/svg+xml;base64," + b64(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), "not a supported image"),
    (b64(zip_bytes()), "not a supported image"),
    (b64(png_declaring(20000, 20000)), "too large|more than the limit"),
    (b64(png_declaring(10000, 10000)), "more than the limit"),
    (b64(png_declaring(4097, 4096)), "more than the limit"),
    ("this is not base64!!", "not valid base64"),
    ("QUJD#$%", "not valid base64"),
    ("", "empty"),
    ("   ", "empty"),
    ("http://127.0.0.1/image.png", "URL images are not supported"),
    ("HTTPS://example.com/a.png", "URL images are not supported"),
    ("data:image/png,rawbytes", "base64"),
    (b64(encoded(Image.effect_noise((64, 64), 50), "PNG")[:2000]), "could not decode"),  # truncated
])
def test_decode_rejects(data, message):
    with pytest.raises(ValueError, match=message):
        decode_base64_image(data)


def test_declared_size_checked_before_pixels():
    data = png_declaring(20000, 20000)
    assert len(data) < 120
    with pytest.raises(ValueError):
        decode_base64_image(b64(data))
    with pytest.raises(ValueError, match="more than the limit"):
        decode_base64_image(b64(encoded(rgb(size=(64, 64)), "PNG")), max_pixels=1000)


def test_decode_refuses_huge_ztxt():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "x" * (5 * 1024 * 1024), zip=True)
    with pytest.raises(ValueError, match="metadata too large"):
        decode_base64_image(b64(encoded(rgb(), "PNG", pnginfo=info)))


def test_decode_data_uri_and_wrapped_base64():
    raw = encoded(rgb("blue"), "PNG")
    image = decode_base64_image("data:image/png;base64," + b64(raw))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (0, 0, 255)
    wrapped = "\n".join(b64(raw)[i:i + 76] for i in range(0, len(b64(raw)), 76))
    assert decode_base64_image(wrapped).size == (16, 8)
    assert decode_base64_image(b64(raw).rstrip("=")).size == (16, 8)  # missing padding tolerated


def test_decode_cmyk_jpeg():
    image = decode_base64_image(b64(encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")))
    assert image.mode == "RGB"
    r, g, b = image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_decode_16_bit_png():
    source = Image.fromarray(np.full((4, 6), 32896, dtype=np.uint16))
    assert source.mode.startswith("I;16")
    image = decode_base64_image(b64(encoded(source, "PNG")))
    assert image.mode == "RGB" and image.size == (6, 4)
    assert image.getpixel((0, 0)) == (128, 128, 128)


def test_decode_palette_with_alpha():
    source = Image.new("P", (4, 4), 1)
    source.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    source.putpixel((0, 0), 0)
    image = decode_base64_image(b64(encoded(source, "PNG", transparency=0)))
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] == 0
    assert image.getpixel((1, 1)) == (255, 0, 0, 255)


def test_decode_exif_rotated_jpeg_comes_out_upright():
    source = Image.new("RGB", (40, 20), "blue")
    source.paste(Image.new("RGB", (20, 20), "red"), (0, 0))  # stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    image = decode_base64_image(b64(encoded(source, "JPEG", exif=exif.tobytes(), quality=95)))
    assert image.size == (20, 40)
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert image.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_decode_animated_takes_first_frame(fmt):
    frames = [rgb("red"), rgb("blue"), rgb("green")]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    with Image.open(io.BytesIO(data)) as check:
        assert check.n_frames == 3
    image = decode_base64_image(b64(data))
    assert image.mode in ("RGB", "RGBA") and image.size == (16, 8)
    assert image.getpixel((0, 0))[:3] == (255, 0, 0)


def test_decode_keeps_png_parameters_for_png_info():
    data = image_to_png_bytes(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), INFOTEXT)
    image = decode_base64_image(b64(data))
    assert image.mode == "RGBA"
    assert read_info(image)[0] == INFOTEXT


def test_decode_rejects_non_string():
    with pytest.raises(ValueError):
        decode_base64_image(b"bytes")  # type: ignore[arg-type]
