"""A1111's module attributes real extensions read (issue 21), on a running server: `modules.devices` (device, cpu,
dtype, dtype_vae, torch_gc, get_device_for, autocast) and `modules.paths` (data_path, models_path, script_path,
extensions_dir), read by a stand-in extension at import time and in a hook, as A1111 extensions do."""
from __future__ import annotations

import json

import pytest
import torch

from modules.generation.request import validate_request
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.stand_ins import services_with_extensions
from tests.fixtures.tiny_checkpoints import build_tiny_model

EXTENSION = '''
import json
from pathlib import Path

import torch
from modules import devices, paths, scripts

OUT = Path(__file__).parents[2] / "seen.json"
SEEN = {"device": str(devices.device), "cpu": str(devices.cpu), "dtype": str(devices.dtype),
        "dtype_vae": str(devices.dtype_vae), "for_sd": str(devices.get_device_for("sd")),
        "data_path": paths.data_path, "models_path": paths.models_path, "script_path": paths.script_path,
        "extensions_dir": paths.extensions_dir}
OUT.write_text(json.dumps(SEEN))


class Reader(scripts.Script):
    def title(self):
        return "Reader"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        with devices.autocast():
            SEEN["hook"] = float(torch.ones(1).sum())
        devices.torch_gc()
        OUT.write_text(json.dumps(SEEN))
'''


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("a1111mods"),
                                     {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    with services_with_extensions(data, {"reader/scripts/reader.py": EXTENSION}) as services:
        yield services, data


def test_an_extension_reads_a1111s_devices_and_paths(started):
    services, data = started
    seen = json.loads((data / "extensions" / "seen.json").read_text())
    assert seen["device"] == str(services.devices.device) == seen["for_sd"]
    assert seen["cpu"] == "cpu" and seen["dtype"] == str(services.devices.dtype)
    assert seen["dtype_vae"] == str(services.devices.vae_dtype)
    assert seen["data_path"] == str(data.resolve()) and seen["models_path"] == str(data.resolve() / "models")
    assert seen["extensions_dir"] == str(data.resolve() / "extensions")
    assert (services.paths.builtin_scripts.parent / "webui.py").is_file() and \
        seen["script_path"] == str(services.paths.builtin_scripts.parent)
    request = validate_request({"prompt": "x", "checkpoint": "tiny-sd1", "width": 64, "height": 64, "steps": 1,
                                "save_images": False}, services.registry)
    job = services.submit_txt2img(request)
    assert job.done.wait(300) and job.state == "done", job.error
    assert json.loads((data / "extensions" / "seen.json").read_text())["hook"] == 1.0   # autocast and torch_gc ran


def test_unknown_names_are_attribute_errors():
    from modules import devices, paths

    with pytest.raises(AttributeError, match=r"modules\.devices\.nope, which does not exist here"):
        devices.nope   # noqa: B018
    with pytest.raises(devices.NansException, match="all NaNs was produced in unet"):
        devices.test_for_nans(torch.full((2,), float("nan")), "unet")
    devices.test_for_nans(torch.tensor([float("nan"), 1.0]), "unet")   # not all NaN: A1111 goes on
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        paths.nope   # noqa: B018
    assert isinstance(devices.cpu, torch.device)
