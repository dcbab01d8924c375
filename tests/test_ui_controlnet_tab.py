"""The ControlNet tab without a browser: a photo's annotations run as jobs (one needing weights says which file),
picking one chooses a ControlNet of its type, a new photo sets the size to its shape."""
from __future__ import annotations

import numpy as np
import pytest

from modules import cmd_args, services as services_module
from modules.ui import controlnet_tab
from tests.fixtures.pictures import photo
from tests.fixtures.tiny_controlnets import build_tiny_controlnet, write_controlnet


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    folder = data / "models" / "ControlNet"
    folder.mkdir(parents=True)
    write_controlnet(build_tiny_controlnet("sd1"), folder / "control_tiny_sd15_canny.safetensors")
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data)]))
    yield built
    built.shutdown()


def test_annotations_of_a_photo_and_the_missing_weights_named(services):
    maps, problems = controlnet_tab.annotate(services, photo(96, 64), ["canny", "softedge_hed", "scribble_xdog"])
    assert [name for _, name in maps] == ["canny", "scribble_xdog"]
    canny = np.asarray(maps[0][0].convert("L"))
    assert maps[0][0].size[0] > maps[0][0].size[1] and set(np.unique(canny)) <= {0, 255} and canny.max() == 255
    assert len(problems) == 1 and "softedge_hed needs ControlNetHED.pth" in problems[0]
    html = controlnet_tab.problems_html(problems)
    assert "ControlNetHED.pth" in html and "<script" not in html


def test_every_default_annotation_is_a_preprocessor_here(services):
    choices = controlnet_tab.annotation_choices(services)
    assert set(controlnet_tab.DEFAULT_ANNOTATIONS) <= set(choices)
    assert "none" not in choices


def test_picking_an_annotation_chooses_a_controlnet_of_its_type(services):
    title = services.controlnet.registry.titles()[0]
    assert controlnet_tab.model_for(services, "canny", "None") == title
    assert controlnet_tab.model_for(services, "canny", title) == title
    assert controlnet_tab.model_for(services, "depth_midas", "None") == "None"   # no depth ControlNet here


def test_a_new_photo_sets_the_size_to_its_shape():
    assert controlnet_tab.fitted_size(1024, 768) == (512, 384)
    assert controlnet_tab.fitted_size(96, 96) == (512, 512)
    assert controlnet_tab.fitted_size(3000, 200) == (512, 64)
