"""The Extras backend: validation, sizes, upscaler 2 blend, infotext, saving; face restoration's crop/paste."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from pydantic import ValidationError

from modules.postprocess.face_detection import FACE_TEMPLATE
from modules.postprocess.face_restoration import (
    FaceRestorationError,
    FaceRestorers,
    restore_with,
)
from modules.images import read_info
from modules.postprocess.postprocessing import run_extras, validate_extras
from modules.postprocess.upscalers import Upscalers
from tests.fixtures.tiny_upscalers import write_upscaler_models


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_upscaler_models(root)
    return Upscalers(root, torch.device("cpu"), torch.float32,
                     SimpleNamespace(ESRGAN_tile=192, ESRGAN_tile_overlap=8))


@pytest.fixture
def env(tmp_path, upscalers):
    options = SimpleNamespace(samples_format="png", enable_pnginfo=True, outdir_extras_samples="outputs/extras-images")
    restorers = FaceRestorers(tmp_path / "models", torch.device("cpu"), torch.float32)
    return dict(upscalers=upscalers, restorers=restorers, options=options, paths=SimpleNamespace(data=tmp_path))


def _picture(width=30, height=20, parameters="a cat\nSteps: 20, Seed: 1"):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    if parameters:
        image.info["parameters"] = parameters
    return image


def test_scale_by_saves_in_extras_images_with_a1111_infotext(env):
    request = validate_extras({"upscaling_resize": 2, "upscaler_1": "lanczos"}, env["upscalers"])
    result = run_extras(request, [(_picture(), "")], **env)
    assert [image.size for image in result.images] == [(60, 40)]
    assert result.infotexts == ["Postprocess upscale by: 2, Postprocess upscaler: Lanczos"]
    assert "Postprocess upscaler: Lanczos" in result.html_info and result.html_info.startswith("<p>")
    saved = env["paths"].data / "outputs" / "extras-images" / "00000.png"
    assert result.saved == [str(saved)]
    with Image.open(saved) as png:
        assert png.size == (60, 40)
        assert png.info["parameters"] == "a cat\nSteps: 20, Seed: 1"      # the generation's text is kept
        assert png.info["postprocessing"] == result.infotexts[0]


def test_scale_to_with_crop_is_exact_and_without_crop_covers(env):
    crop = validate_extras({"resize_mode": 1, "upscaling_resize_w": 64, "upscaling_resize_h": 64,
                            "upscaler_1": "Nearest", "save_images": False}, env["upscalers"])
    result = run_extras(crop, [(_picture(30, 20), "")], **env)
    assert result.images[0].size == (64, 64) and result.saved == []
    assert "Postprocess upscale to: 64x64" in result.infotexts[0]
    assert "Postprocess crop to: 64x64" in result.infotexts[0]
    cover = crop.model_copy(update={"upscaling_crop": False})
    assert run_extras(cover, [(_picture(30, 20), "")], **env).images[0].size == (96, 64)   # as A1111


def test_model_upscaler_and_upscaler_2_blend(env):
    picture = _picture(16, 12, parameters="")
    request = validate_extras({"upscaling_resize": 2, "upscaler_1": "Nearest", "upscaler_2": "tiny_compact_x4.pth",
                               "extras_upscaler_2_visibility": 0.4, "save_images": False}, env["upscalers"])
    result = run_extras(request, [(picture, "")], **env)
    nearest = picture.resize((32, 24), Image.Resampling.NEAREST)
    model = env["upscalers"].upscale(picture, 2, "tiny_compact_x4")
    expected = np.asarray(Image.blend(nearest, model, 0.4), dtype=np.int16)
    assert np.abs(np.asarray(result.images[0], dtype=np.int16) - expected).max() <= 1
    assert "Postprocess upscaler 2: tiny_compact_x4, Postprocess upscaler 2 visibility: 0.4" in result.infotexts[0]


def test_batch_saves_every_image_under_its_name(env):
    request = validate_extras({"upscaling_resize": 1.5, "upscaler_1": "Lanczos"}, env["upscalers"])
    result = run_extras(request, [(_picture(20, 20), "first.png"), (_picture(10, 30), "second.jpg")], **env)
    assert [image.size for image in result.images] == [(30, 30), (15, 45)]
    folder = env["paths"].data / "outputs" / "extras-images"
    assert sorted(p.name for p in folder.iterdir()) == ["first-0000.png", "second-0000.png"]
    assert len(result.infotexts) == 2


def test_upscaler_none_leaves_the_size(env):
    request = validate_extras({"save_images": False}, env["upscalers"])
    result = run_extras(request, [(_picture(30, 20), "")], **env)
    assert result.images[0].size == (30, 20) and result.infotexts == [""]


def test_too_large_output_is_refused_before_any_work(env):
    request = validate_extras({"upscaling_resize": 8, "upscaler_1": "Lanczos"}, env["upscalers"])
    with pytest.raises(ValueError, match="would become 9600x80"):
        run_extras(request, [(_picture(30, 20), ""), (_picture(1200, 10), "")], **env)
    assert not (env["paths"].data / "outputs").exists()


@pytest.mark.parametrize("data, field", [
    ({"upscaler_1": "4x-Nope"}, "upscaler_1"),
    ({"upscaler_2": "Latent"}, "upscaler_2"),
    ({"upscaling_resize": float("nan")}, "upscaling_resize"),
    ({"upscaling_resize": 9}, "upscaling_resize"),
    ({"gfpgan_visibility": 1.5}, "gfpgan_visibility"),
    ({"upscaling_resize_w": 512.5}, "upscaling_resize_w"),
    ({"image": "x"}, "image"),
])
def test_bad_requests_name_the_field(upscalers, data, field):
    with pytest.raises(ValidationError) as error:
        validate_extras(data, upscalers)
    assert field in str(error.value)


def test_missing_face_models_say_which_file_goes_where(env):
    restorers = env["restorers"]
    assert restorers.available() == []
    assert restorers.missing_message("CodeFormer") == ("CodeFormer needs models/Codeformer/codeformer-v0.1.0.pth "
                                                       "and models/GFPGAN/detection_Resnet50_Final.pth")
    assert restorers.api_list() == [{"name": "CodeFormer", "cmd_dir": None}, {"name": "GFPGAN", "cmd_dir": None}]
    request = validate_extras({"gfpgan_visibility": 1, "save_images": False}, env["upscalers"])
    with pytest.raises(FaceRestorationError, match="GFPGAN needs models/GFPGAN/GFPGANv1.4.pth"):
        run_extras(request, [(_picture(), "")], **env)


def test_garbage_face_model_gives_a_clear_error(tmp_path):
    folder = tmp_path / "GFPGAN"
    folder.mkdir()
    (folder / "GFPGANv1.4.pth").write_bytes(b"\x80garbage")
    (folder / "detection_Resnet50_Final.pth").write_bytes(b"\x80garbage")
    restorers = FaceRestorers(tmp_path, torch.device("cpu"), torch.float32)
    assert restorers.available() == ["GFPGAN"]
    with pytest.raises(FaceRestorationError, match="detection_Resnet50_Final.pth: refused to load"):
        restorers.restore(_picture(), "GFPGAN", 1.0)


def test_wrong_detector_weights_are_named(tmp_path):
    folder = tmp_path / "GFPGAN"
    folder.mkdir()
    torch.save({"conv.weight": torch.zeros(1)}, folder / "detection_Resnet50_Final.pth")
    (folder / "GFPGANv1.4.pth").write_bytes(b"\x80garbage")
    restorers = FaceRestorers(tmp_path, torch.device("cpu"), torch.float32)
    with pytest.raises(FaceRestorationError, match="not the RetinaFace ResNet-50 detector"):
        restorers.restore(_picture(), "GFPGAN", 1.0)


def _face_picture():
    """A grey 200×160 picture with a 'face' whose landmarks are the template's, shrunk and moved."""
    image = Image.new("RGB", (200, 160), (120, 120, 120))
    landmarks = FACE_TEMPLATE * 0.25 + np.array([40.0, 20.0], dtype=np.float32)
    return image, landmarks


def test_restored_face_is_pasted_back_where_the_face_is():
    image, landmarks = _face_picture()
    seen = []

    def restore(face):
        seen.append(tuple(face.shape))
        return -face        # a visible change: invert the crop

    result = restore_with(image, lambda rgb: [landmarks], restore, visibility=1.0)
    assert result.size == image.size and seen == [(1, 3, 512, 512)]
    pixels = np.asarray(result, dtype=np.int16)
    centre = landmarks.mean(axis=0).round().astype(int)
    assert abs(pixels[centre[1], centre[0]] - (255 - 120)).max() <= 2        # inverted inside the face
    assert (pixels[150, 190] == 120).all() and (pixels[5, 5] == 120).all()   # untouched far away
    half = np.asarray(restore_with(image, lambda rgb: [landmarks], restore, visibility=0.5), dtype=np.int16)
    assert abs(half[centre[1], centre[0]] - (120 + 135) / 2).max() <= 2


def test_no_face_found_leaves_the_image():
    image, _ = _face_picture()
    result = restore_with(image, lambda rgb: [], lambda face: face * 0, visibility=1.0)
    assert np.array_equal(np.asarray(result), np.asarray(image))


def test_saved_jpeg_carries_the_postprocessing_text(env):
    env["options"].samples_format = "jpg"
    request = validate_extras({"upscaling_resize": 2, "upscaler_1": "Lanczos"}, env["upscalers"])
    result = run_extras(request, [(_picture(), "")], **env)
    assert result.saved[0].endswith("00000.jpg")
    with Image.open(result.saved[0]) as jpeg:
        assert read_info(jpeg)[0] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_png_without_pnginfo_has_no_text(env):
    env["options"].enable_pnginfo = False
    request = validate_extras({"upscaling_resize": 2, "upscaler_1": "Lanczos"}, env["upscalers"])
    result = run_extras(request, [(_picture(), "")], **env)
    with Image.open(result.saved[0]) as png:
        assert isinstance(png, PngImagePlugin.PngImageFile) and "parameters" not in png.info
        assert "postprocessing" not in png.info


def test_batch_from_a_directory_can_save_to_its_own_output_folder(tmp_path):
    from modules.options import Options

    options = Options(None)
    upscalers = Upscalers(tmp_path / "models", torch.device("cpu"), torch.float32, options)
    request = validate_extras({"upscaling_resize": 2.0, "upscaler_1": "Lanczos"}, upscalers)
    target = tmp_path / "chosen"
    result = run_extras(request, [(Image.new("RGB", (20, 10), "red"), "holiday.jpg")], upscalers=upscalers,
                        restorers=None, options=options, paths=SimpleNamespace(data=tmp_path), output_dir=target)
    saved = [Path(path) for path in result.saved]
    assert [path.parent for path in saved] == [target] and saved[0].name.startswith("holiday")
    assert Image.open(saved[0]).size == (40, 20)
