"""The upscaler list, built-in and model upscalers (tiny spandrel-loadable files), latent modes, bad files."""
from types import SimpleNamespace

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from modules.postprocess.upscalers import LATENT_MODES, UpscalerError, Upscalers, latent_api_list, upscale_latents
from tests.fixtures.tiny_upscalers import write_malicious_pickle, write_upscaler_models

MODEL_NAMES = ["tiny_esrgan_4x", "tiny_esrgan_2x", "tiny_realesrgan_x4plus", "tiny_compact_x4"]


def _options(tile=192, overlap=8):
    return SimpleNamespace(ESRGAN_tile=tile, ESRGAN_tile_overlap=overlap)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_upscaler_models(root)
    return root


@pytest.fixture(scope="module")
def upscalers(models_root):
    return Upscalers(models_root, torch.device("cpu"), torch.float32, _options())


def _gradient(width, height):
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
                          np.broadcast_to((x + y) / 2, (height, width, 1))], axis=2)
    return Image.fromarray(rgb.round().astype(np.uint8))


def test_list_has_a1111_builtins_then_every_model_file(upscalers):
    names = upscalers.names()
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    assert sorted(names[3:]) == sorted(MODEL_NAMES)
    choices = upscalers.hires_choices()
    assert choices[:6] == list(LATENT_MODES) and "None" not in choices and "tiny_compact_x4" in choices
    assert latent_api_list() == [{"name": name} for name in LATENT_MODES]


def test_find_accepts_any_case_and_the_file_name(upscalers):
    assert upscalers.find("lanczos") == "Lanczos"
    assert upscalers.find("TINY_ESRGAN_4X") == "tiny_esrgan_4x"
    assert upscalers.find("tiny_esrgan_2x.safetensors") == "tiny_esrgan_2x"
    assert upscalers.find("latent (bicubic antialiased)") == "Latent (bicubic antialiased)"
    assert upscalers.is_latent("Latent") and not upscalers.is_latent("Lanczos")
    assert upscalers.find("4x-UltraSharp") is None
    with pytest.raises(UpscalerError, match="unknown upscaler '4x-UltraSharp'"):
        upscalers.upscale(_gradient(8, 8), 2, "4x-UltraSharp")


@pytest.mark.parametrize("name", ["Lanczos", "Nearest"])
def test_builtin_upscalers_give_the_exact_size(upscalers, name):
    image = _gradient(33, 21)
    assert upscalers.upscale(image, 1.5, name).size == (round(33 * 1.5), round(21 * 1.5))
    assert upscalers.upscale(image, 3, name).size == (99, 63)


def test_none_leaves_the_image_alone(upscalers):
    image = _gradient(20, 10)
    assert upscalers.upscale(image, 4, "None") is image


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_upscalers_give_the_exact_size_and_their_own_pixels(upscalers, name):
    image = _gradient(24, 16)
    result = upscalers.upscale(image, 2.5, name)
    assert result.size == (60, 40) and result.mode == "RGB"
    lanczos = np.asarray(upscalers.upscale(image, 2.5, "Lanczos"), dtype=np.int16)
    assert np.abs(np.asarray(result, dtype=np.int16) - lanczos).mean() > 1   # the model really ran


def test_two_times_model_runs_twice_for_four_times(upscalers):
    result = upscalers.upscale(_gradient(12, 10), 4, "tiny_esrgan_2x")
    assert result.size == (48, 40)
    scales = {item["name"]: item["scale"] for item in upscalers.api_list()}
    assert scales["tiny_esrgan_2x"] == 2 and scales["Lanczos"] == 4


def test_transparency_is_kept(upscalers):
    image = _gradient(16, 12).convert("RGBA")
    image.putalpha(Image.new("L", (16, 12), 77))
    result = upscalers.upscale(image, 2, "tiny_compact_x4")
    assert result.mode == "RGBA" and result.size == (32, 24)
    assert abs(np.asarray(result.getchannel("A")).astype(int).mean() - 77) < 1


def test_tiled_matches_untiled_without_seams(models_root):
    image = _gradient(70, 50)
    whole = Upscalers(models_root, torch.device("cpu"), torch.float32, _options(tile=0))
    tiled = Upscalers(models_root, torch.device("cpu"), torch.float32, _options(tile=32, overlap=8))
    a = np.asarray(whole.upscale(image, 4, "tiny_compact_x4"), dtype=np.int16)
    b = np.asarray(tiled.upscale(image, 4, "tiny_compact_x4"), dtype=np.int16)
    assert a.shape == b.shape == (200, 280, 3)
    difference = np.abs(a - b)
    assert difference.mean() < 0.5 and difference.max() <= 6


def test_interrupted_job_still_gets_the_requested_size(upscalers):
    job = SimpleNamespace(interrupted=True, textinfo="", set_progress=lambda step, steps: None)
    assert upscalers.upscale(_gradient(30, 20), 2, "tiny_esrgan_4x", job=job).size == (60, 40)
    assert "tiny_esrgan_4x" in job.textinfo


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mode", list(LATENT_MODES))
def test_latent_modes_resize_to_the_requested_shape(mode, dtype):
    latents = torch.randn(2, 4, 8, 6).to(dtype)
    result = upscale_latents(latents, 16, 12, mode)
    assert result.shape == (2, 4, 16, 12) and result.dtype == dtype
    assert torch.isfinite(result.float()).all()


def test_latent_nearest_repeats_values():
    latents = torch.arange(4.0).view(1, 1, 2, 2)
    result = upscale_latents(latents, 4, 4, "Latent (nearest)")
    assert result[0, 0].tolist()[0] == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown latent upscale mode"):
        upscale_latents(latents, 4, 4, "Latent (cubic)")


def test_garbage_and_unknown_files_give_a_clear_error(tmp_path):
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    (folder / "garbage.pth").write_bytes(b"this is not a model at all")
    safetensors.torch.save_file({"some.weight": torch.zeros(3, 3)}, folder / "mystery.safetensors")
    upscalers = Upscalers(tmp_path, torch.device("cpu"), torch.float32, _options())
    assert {"garbage", "mystery"} <= set(upscalers.names())
    with pytest.raises(UpscalerError, match="garbage.pth: not a safetensors or PyTorch"):
        upscalers.upscale(_gradient(8, 8), 2, "garbage")
    with pytest.raises(UpscalerError, match="mystery.safetensors: not a model architecture spandrel knows"):
        upscalers.upscale(_gradient(8, 8), 2, "mystery")


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    marker = tmp_path / "pwned"
    write_malicious_pickle(folder / "evil.pth", marker)
    upscalers = Upscalers(tmp_path, torch.device("cpu"), torch.float32, _options())
    with pytest.raises(UpscalerError, match="evil.pth: refused to load"):
        upscalers.upscale(_gradient(8, 8), 2, "evil")
    assert not marker.exists()


def test_refresh_sees_new_and_removed_files(tmp_path, models_root):
    upscalers = Upscalers(tmp_path, torch.device("cpu"), torch.float32, _options())
    assert upscalers.names() == ["None", "Lanczos", "Nearest"]
    (tmp_path / "DAT").mkdir()
    (tmp_path / "DAT" / "x.pth").write_bytes((models_root / "RealESRGAN" / "sub" / "tiny_compact_x4.pth").read_bytes())
    upscalers.refresh()
    assert upscalers.names()[3:] == ["x"]
    assert upscalers.upscale(_gradient(10, 10), 2, "x").size == (20, 20)
    (tmp_path / "DAT" / "x.pth").unlink()
    upscalers.refresh()
    assert upscalers.find("x") is None
