"""ControlNet preprocessors: the extension's module names, maps of the right size, weights only from the
annotator folder, clear errors for missing or bad files."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from modules.controlnet.preprocessors import (INVERT, LINEART_STANDARD, PREPROCESSORS, PreprocessorError,
                                              Preprocessors)
from tests.fixtures.tiny_annotators import write_annotators

CPU = torch.device("cpu")
WEIGHT_FREE = [p.name for p in PREPROCESSORS if not p.weight_files]


@pytest.fixture(scope="session")
def annotator_dir(tmp_path_factory):
    return write_annotators(tmp_path_factory.mktemp("annotators"))


@pytest.fixture(scope="session")
def loaded(annotator_dir):
    """One Preprocessors over the fixture folder for the whole session, so each network loads once."""
    return Preprocessors(annotator_dir, CPU)


def photo(width=300, height=200) -> Image.Image:
    """A non-square photo-like picture: a grey ground, a light box, a red disc and a dark stick figure."""
    image = Image.new("RGB", (width, height), (90, 110, 130))
    draw = ImageDraw.Draw(image)
    draw.rectangle((150, 40, 260, 150), fill=(230, 220, 200))
    draw.ellipse((30, 30, 110, 110), fill=(200, 40, 40))
    draw.line((70, 120, 70, 180), fill=(20, 20, 20), width=6)
    draw.line((40, 140, 100, 140), fill=(20, 20, 20), width=6)
    return image


def test_importing_the_module_does_not_import_controlnet_aux():
    code = "import sys, modules.controlnet.preprocessors; print('controlnet_aux' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_names_follow_the_extension_and_aliases_resolve(tmp_path):
    preprocessors = Preprocessors(tmp_path, CPU)
    names = preprocessors.names()
    assert names[:2] == ["none", INVERT]
    assert names[2:] == sorted(names[2:])
    for expected in ("canny", "softedge_hed", "depth_midas", "openpose_full", "seg_ufade20k", "shuffle"):
        assert expected in names
    assert preprocessors.find("hed").name == "softedge_hed"
    assert preprocessors.find("PIDINET").name == "softedge_pidinet"
    assert preprocessors.find("depth").name == "depth_midas"
    assert preprocessors.find("lineart").name == "lineart_realistic"
    assert preprocessors.find("lineart_standard").name == LINEART_STANDARD
    assert preprocessors.find("invert").name == INVERT
    assert preprocessors.find("segmentation").name == "seg_ufade20k"
    assert preprocessors.find("normal_map").name == "normal_midas"
    assert preprocessors.find("no_such_thing") is None


def test_unknown_module_lists_the_valid_names(tmp_path):
    with pytest.raises(PreprocessorError, match="Unknown preprocessor 'cany'.*canny.*softedge_hed"):
        Preprocessors(tmp_path, CPU).run("cany", photo())


@pytest.mark.parametrize("name", WEIGHT_FREE)
def test_weight_free_preprocessors_work_out_of_the_box(tmp_path, name):
    preprocessors = Preprocessors(tmp_path, CPU)   # an empty annotator folder
    result = preprocessors.run(name, photo(), resolution=256)
    assert result.mode == "RGB"
    if preprocessors.find(name).resolution is None:
        assert result.size == (300, 200)   # none / invert keep the image as it is
    else:
        assert result.size == (384, 256)   # short side = resolution, long side scaled and rounded to 64
    assert result.tobytes() == preprocessors.run(name, photo(), resolution=256).tobytes()   # deterministic


def test_none_returns_the_image_unchanged(tmp_path):
    image = photo()
    assert Preprocessors(tmp_path, CPU).run("none", image) is image


def test_canny_finds_the_border_of_a_white_square(tmp_path):
    image = Image.new("RGB", (512, 512), "black")
    ImageDraw.Draw(image).rectangle((128, 128, 383, 383), fill="white")
    edges = np.asarray(Preprocessors(tmp_path, CPU).run("canny", image, resolution=512))[:, :, 0]
    assert edges[256, 120:136].max() == 255          # the left border
    assert edges[200:300, 200:300].max() == 0        # nothing inside the square
    assert edges[:100, :100].max() == 0              # nothing in the black background


def test_invert_and_threshold_do_what_they_say(tmp_path):
    preprocessors = Preprocessors(tmp_path, CPU)
    image = photo()
    assert np.array_equal(np.asarray(preprocessors.run("invert", image)), 255 - np.asarray(image))
    binary = np.asarray(preprocessors.run("threshold", image, resolution=200, threshold_a=150))
    assert set(np.unique(binary)) == {0, 255}
    assert binary[5, 5, 0] == 0 and binary[100, 250, 0] == 255   # dark ground → black, light box → white


def test_thresholds_change_the_map(tmp_path):
    preprocessors = Preprocessors(tmp_path, CPU)
    gentle = preprocessors.run("blur_gaussian", photo(), threshold_a=1.0)
    strong = preprocessors.run("blur_gaussian", photo(), threshold_a=20.0)
    assert gentle.tobytes() != strong.tobytes()
    # As in the extension, tile_resample has no resolution: it down-samples the picture at its own size.
    assert preprocessors.find("tile_resample").resolution is None
    assert preprocessors.run("tile_resample", photo(), resolution=256, threshold_a=2.0).size == (150, 100)


WEIGHTED_IN_FIXTURE = ["softedge_hed", "softedge_hedsafe", "scribble_hed", "softedge_pidinet", "softedge_pidisafe",
                       "scribble_pidinet", "mlsd", "lineart_realistic", "lineart_coarse", "lineart_anime", "normal_bae",
                       "depth_midas", "normal_midas", "openpose", "openpose_hand",
                       "openpose_face", "openpose_faceonly", "openpose_full", "seg_ufade20k", "depth_anything"]


@pytest.mark.parametrize("name", WEIGHTED_IN_FIXTURE)
def test_weighted_preprocessors_run_the_real_networks(loaded, name):
    result = loaded.run(name, photo(), resolution=128)
    assert result.mode == "RGB" and result.size == (192, 128)


def test_networks_load_once_and_give_the_same_map_every_time(loaded):
    first = loaded.run("softedge_hed", photo(), resolution=128)
    network = loaded._networks["hed"]
    assert loaded.run("scribble_hed", photo(), resolution=128).size == (192, 128)
    assert loaded._networks["hed"] is network   # softedge and scribble share the HED network
    assert loaded.run("softedge_hed", photo(), resolution=128).tobytes() == first.tobytes()


def test_segmentation_uses_the_ade20k_palette(loaded):
    from controlnet_aux.util import ade_palette

    colours = {tuple(c) for c in np.asarray(loaded.run("seg_ufade20k", photo(), resolution=128)).reshape(-1, 3)}
    assert colours <= {tuple(c) for c in ade_palette()}


def test_unload_drops_the_networks(annotator_dir):
    preprocessors = Preprocessors(annotator_dir, CPU)
    preprocessors.run("mlsd", photo(), resolution=128)
    assert preprocessors._networks
    preprocessors.unload()
    assert not preprocessors._networks
    assert preprocessors.run("mlsd", photo(), resolution=128).size == (192, 128)


@pytest.mark.parametrize("name", [p.name for p in PREPROCESSORS if p.weight_files])
def test_missing_weights_name_the_file_and_the_folder(tmp_path, name):
    preprocessors = Preprocessors(tmp_path, CPU)
    with pytest.raises(PreprocessorError) as error:
        preprocessors.run(name, photo())
    assert preprocessors.find(name).weight_files[0] in str(error.value) and str(tmp_path) in str(error.value)
    assert "huggingface.co/" in str(error.value)


def test_every_weight_file_is_named_in_the_module_table():
    import modules.controlnet.preprocessors as module

    for preprocessor in PREPROCESSORS:
        for file in preprocessor.weight_files:
            assert file in module.__doc__


def test_a_corrupt_weight_file_is_a_clear_error(tmp_path):
    (tmp_path / "ControlNetHED.pth").write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(PreprocessorError, match="ControlNetHED.pth"):
        Preprocessors(tmp_path, CPU).run("softedge_hed", photo())


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "mlsd_large_512_fp32.pth").write_bytes(pickle.dumps({"weight": Payload()}))
    with pytest.raises(PreprocessorError, match="mlsd_large_512_fp32.pth.*refused"):
        Preprocessors(tmp_path, CPU).run("mlsd", photo())


def test_weights_of_another_network_are_a_clear_error(tmp_path, annotator_dir):
    (tmp_path / "sk_model.pth").write_bytes((annotator_dir / "mlsd_large_512_fp32.pth").read_bytes())
    with pytest.raises(PreprocessorError, match="sk_model.pth.*not the weights"):
        Preprocessors(tmp_path, CPU).run("lineart_realistic", photo())


def test_module_detail_has_the_extension_sliders(tmp_path):
    preprocessors = Preprocessors(tmp_path, CPU)
    canny = preprocessors.module_detail("canny")
    assert canny["model_free"] is False
    assert [s["name"] for s in canny["sliders"]] == ["Preprocessor Resolution", "Low Threshold", "High Threshold"]
    assert canny["sliders"][0] == {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048, "step": 1}
    assert canny["sliders"][1]["value"] == 100 and canny["sliders"][2]["value"] == 200
    assert preprocessors.module_detail("none")["sliders"] == []
    assert [s["name"] for s in preprocessors.module_detail("mlsd")["sliders"]][1:] == [
        "MLSD Value Threshold", "MLSD Distance Threshold"]


def test_control_types_filter_modules_and_models_like_the_extension(tmp_path):
    models = ["control_sd15_canny [fef5e48e]", "control_v11p_sd15_canny [d14c016b]",
              "control_v11f1p_sd15_depth [cfd03158]", "control_v11p_sd15_seg [e1f51eb9]"]
    body = Preprocessors(tmp_path, CPU).control_types(models)["control_types"]
    assert list(body)[:3] == ["All", "Canny", "Depth"]
    assert body["All"] == {"module_list": Preprocessors(tmp_path, CPU).names(), "model_list": ["None", *models],
                           "default_option": "none", "default_model": "None"}
    canny = body["Canny"]
    assert canny["module_list"] == ["none", "canny", INVERT]
    assert canny["model_list"] == ["None", models[0], models[1]]
    assert canny["default_option"] == "canny"
    assert canny["default_model"] == models[1]           # a ControlNet 1.1 model is preferred
    assert body["Segmentation"]["module_list"] == ["none", "seg_ufade20k"]
    assert body["Segmentation"]["default_option"] == "none"   # the extension's default, seg_ofade20k, is absent
    assert body["Segmentation"]["model_list"] == ["None", models[3]]
    assert "scribble_xdog" in body["Scribble/Sketch"]["module_list"]
    assert body["Tile/Blur"]["module_list"] == ["none", "blur_gaussian", "tile_resample"]
    assert body["Inpaint"] == {"module_list": ["none"], "model_list": ["None"], "default_option": "none",
                               "default_model": "None"}
