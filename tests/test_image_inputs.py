"""Pictures from users' folders (batch from directory) and from the UI: the
same guards and conversions as base64 API images."""
import io
import time

import numpy as np
import pytest
from PIL import Image

from modules.images import check_user_image, load_image_file
from tests.fixtures.png_bombs import blank_png, png_declaring

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def sixteen_bit() -> Image.Image:
    return Image.fromarray(np.full((4, 6), 65535 // 2, dtype=np.uint16))  # mode "I;16"


def truncated_png() -> bytes:
    return encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")[:2000]


@pytest.fixture
def folder(tmp_path):
    def write(name: str, data: bytes):
        path = tmp_path / name
        path.write_bytes(data)
        return path
    return write


# ---------------------------------------------------------------- files

@pytest.mark.parametrize("name, data, message", [
    ("notes.png", b"just some text, not a picture", "not a supported image"),
    ("page.png", b"<!DOCTYPE html><html><script>alert(1)</script></html>", "not a supported image"),
    ("empty.png", b"", "not a supported image"),
    ("cut.png", truncated_png(), "could not decode"),
    ("bomb.png", png_declaring(20000, 20000), "too large|more than the limit"),
    ("big.png", png_declaring(10000, 10000), "more than the limit"),
])
def test_bad_files_are_refused_naming_the_file(folder, name, data, message):
    path = folder(name, data)
    with pytest.raises(ValueError, match=message) as caught:
        load_image_file(path)
    assert name in str(caught.value)


def test_bomb_is_refused_from_its_header_quickly(folder):
    path = folder("bomb.png", png_declaring(20000, 20000))
    assert path.stat().st_size < 120
    started = time.monotonic()
    with pytest.raises(ValueError):
        load_image_file(path)
    assert time.monotonic() - started < 1


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ValueError, match="gone.png.*cannot read"):
        load_image_file(tmp_path / "gone.png")
    with pytest.raises(ValueError, match="cannot read"):
        load_image_file(tmp_path)


def test_pixel_limit_is_configurable(folder):
    path = folder("a.png", encoded(Image.new("RGB", (64, 64)), "PNG"))
    assert load_image_file(path).size == (64, 64)
    with pytest.raises(ValueError, match="a.png.*64x64, more than the limit of 1000"):
        load_image_file(path, max_pixels=1000)


def test_16_bit_png_is_scaled_to_8_bits(folder):
    image = load_image_file(folder("deep.png", encoded(sixteen_bit(), "PNG")))
    assert image.mode == "RGB" and image.size == (6, 4)
    assert image.getpixel((0, 0)) == (127, 127, 127)  # half brightness, not clipped to white


def test_cmyk_jpeg_becomes_rgb(folder):
    image = load_image_file(folder("print.jpg", encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")))
    assert image.mode == "RGB"
    r, g, b = image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_animated_gif_gives_its_first_frame(folder):
    image = load_image_file(folder("moving.gif", animated_gif()))
    assert image.mode == "RGB" and image.getpixel((4, 4)) == RED


def test_rgba_png_keeps_its_transparency(folder):
    source = Image.new("RGBA", (8, 4), (10, 20, 30, 255))
    source.paste((0, 0, 0, 0), (4, 0, 8, 4))
    image = load_image_file(folder("cutout.png", encoded(source, "PNG")))
    assert image.mode == "RGBA" and image.getpixel((6, 1))[3] == 0 and image.getpixel((1, 1)) == (10, 20, 30, 255)


def test_exif_rotated_jpeg_comes_out_upright(folder):
    source = Image.new("RGB", (40, 20), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    image = load_image_file(folder("phone.jpg", encoded(source, "JPEG", exif=exif.tobytes())))
    assert image.size == (20, 40)


def test_accepts_str_paths(folder):
    path = folder("plain.png", encoded(Image.new("RGB", (3, 2), GREEN), "PNG"))
    assert load_image_file(str(path)).getpixel((0, 0)) == GREEN


# ---------------------------------------------------------------- images from the UI

def test_ui_image_over_the_limit_names_what_it_is():
    with pytest.raises(ValueError, match="mask is 200x100, more than the limit of 10000 pixels"):
        check_user_image(Image.new("L", (200, 100)), max_pixels=10_000, what="mask")


def test_ui_value_that_is_not_an_image():
    with pytest.raises(ValueError, match="init image is not an image"):
        check_user_image("a/path.png", what="init image")


@pytest.mark.parametrize("source, mode, pixel", [
    (sixteen_bit(), "RGB", (127, 127, 127)),
    (Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "RGB", (255, 255, 255)),
    (Image.new("L", (4, 4), 90), "RGB", (90, 90, 90)),
    (Image.new("LA", (4, 4), (90, 0)), "RGBA", (90, 90, 90, 0)),
    (Image.new("RGBA", (4, 4), (1, 2, 3, 4)), "RGBA", (1, 2, 3, 4)),
    (Image.new("RGB", (4, 4), BLUE), "RGB", BLUE),
])
def test_ui_images_become_rgb_or_rgba(source, mode, pixel):
    image = check_user_image(source)
    assert image.mode == mode and image.getpixel((1, 1)) == pixel


def test_ui_palette_image_with_transparency_keeps_it():
    source = Image.new("P", (4, 4), 1)
    source.putpalette([0, 0, 0, 200, 100, 50] + [0, 0, 0] * 254)
    source.info["transparency"] = 0
    assert check_user_image(source).getpixel((0, 0)) == (200, 100, 50, 255)
    source.paste(0, (0, 0, 2, 2))
    assert check_user_image(source).getpixel((0, 0))[3] == 0


def test_ui_animated_image_gives_its_first_frame():
    opened = Image.open(io.BytesIO(animated_gif()))
    opened.seek(2)  # left on the last frame
    image = check_user_image(opened)
    assert image.mode == "RGB" and image.getpixel((4, 4)) == RED


def test_ui_truncated_image_is_refused_naming_what_it_is():
    opened = Image.open(io.BytesIO(truncated_png()))  # header only: pixels load later
    with pytest.raises(ValueError, match="init image: could not decode"):
        check_user_image(opened, what="init image")


@pytest.mark.parametrize("size", [13000, 4200])
def test_an_upload_over_the_cap_is_refused_by_the_uis_own_components_before_decoding(tmp_path, size):
    """Gradio's gr.Image opens uploads with Pillow outside our code: at start the project makes Pillow itself
    refuse what is over its cap (a 13000² PNG of 164 KB was decoded in 24 s into 3 GB through the UI)."""
    import tracemalloc

    import gradio as gr
    from gradio.data_classes import ImageData

    from modules import cmd_args, services

    services.create(cmd_args.parse_args(["--data-dir", str(tmp_path / "data"), "--skip-load-model-at-start"])).shutdown()
    path = tmp_path / "bomb.png"
    path.write_bytes(blank_png(size, size))
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(Image.DecompressionBombError, match="exceeds limit"):
        gr.Image(type="pil").preprocess(ImageData(path=str(path)))
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1 and peak < 50_000_000
    path.write_bytes(blank_png(4096, 4096))     # the cap itself is allowed
    assert gr.Image(type="pil").preprocess(ImageData(path=str(path))).size == (4096, 4096)


def test_the_uis_inputs_refuse_a_non_image_at_its_upload_in_one_line_and_never_fail_an_event(tmp_path):
    """A text file renamed .png: the upload check names the input and the file, not Gradio's temporary path; should
    the file reach an event anyway, the input reads as empty, so it cannot fail a generation (a disabled ControlNet
    unit's image)."""
    import gradio as gr
    from gradio.data_classes import ImageData

    from modules.ui.image_inputs import named_refusals, upload_refusal

    fake = tmp_path / "gradio-temp-1234" / "photo.png"
    fake.parent.mkdir()
    fake.write_text("this is not an image\n")
    real = tmp_path / "real.png"
    real.write_bytes(encoded(Image.new("RGB", (8, 8), RED), "PNG"))
    with gr.Blocks() as page:
        image = named_refusals(gr.Image(type="pil", label="Control image"), name="ControlNet Unit 0 › Control image")
        editor = named_refusals(gr.ImageEditor(type="pil", label="Image for img2img"))
    message = upload_refusal("ControlNet Unit 0 › Control image", {"path": str(fake), "orig_name": "photo.png"})
    assert message.startswith("ControlNet Unit 0 › Control image: “photo.png” was not loaded: not a supported image")
    assert "\n" not in message and "gradio-temp-1234" not in message and str(tmp_path) not in message
    assert upload_refusal("Image", {"path": str(real), "orig_name": "real.png"}) is None
    assert upload_refusal("Image", {"background": {"path": str(fake)}, "layers": [], "composite": None})
    assert image.preprocess(ImageData(path=str(fake))) is None
    assert image.preprocess(ImageData(path=str(real))).size == (8, 8)
    from gradio.components.image_editor import EditorData, FileData

    assert editor.preprocess(EditorData(background=FileData(path=str(fake)), layers=[], composite=None)) is None
    # the check runs on each input's upload event, with the raw file (not Pillow's attempt at it)
    for component in (image, editor):
        upload = [dep for dep in page.fns.values()
                  if any(target[0] == component._id and target[1] == "upload" for target in dep.targets)]
        assert len(upload) == 1 and upload[0].preprocess is False


def test_a_non_image_in_extras_batch_process_is_named_without_the_servers_temporary_folder(tmp_path):
    from modules.ui import extras

    folder = tmp_path / "gradio-temp-5678"
    folder.mkdir()
    (folder / "scan.png").write_text("not an image")
    with pytest.raises(ValueError) as refused:
        extras.collect_inputs(extras.BATCH, None, [str(folder / "scan.png")], "", False)
    assert str(refused.value).startswith("Batch Process: scan.png: not a supported image"), str(refused.value)
    assert "gradio-temp-5678" not in str(refused.value)
