"""The ControlNet tab in a real browser (Playwright + Debian's Chromium, headless): drop a photo, see its
annotations (the ones needing weights say which file is missing), generate on the tiny SD1 model with a tiny
ControlNet, see the photo and the result side by side; then 💾 and 🗃️ under the gallery write log/images.

Set SKIP_BROWSER_TESTS=1 to skip these where no Chromium can be installed.
"""
from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from modules.controlnet.models import ControlNetRegistry
from tests.fixtures.tiny_controlnets import build_tiny_controlnet, write_controlnet
from tests.fixtures.ui import set_slider
from tests.test_ui_browser_controlnet import _fetch, _is_edge_map, _photo

GENERATE_TIMEOUT = 180   # seconds (includes loading the checkpoint and the ControlNet)


@pytest.fixture
def controlnet_title(tmp_path) -> str:
    folder = tmp_path / "models" / "ControlNet"
    folder.mkdir(parents=True)
    write_controlnet(build_tiny_controlnet("sd1"), folder / "control_tiny_sd15_canny.safetensors")
    return ControlNetRegistry(folder).titles()[0]


@pytest.fixture
def tiny_sd1_server(controlnet_title, tiny_sd1_server):
    return tiny_sd1_server


def test_photo_annotations_generate_and_side_by_side_then_save_and_zip(tiny_sd1_page, tiny_sd1_server,
                                                                       controlnet_title, tmp_path):
    page, server = tiny_sd1_page, tiny_sd1_server
    try:
        photo = tmp_path / "photo.png"
        _photo(photo)
        page.get_by_role("tab", name="ControlNet", exact=True).click()
        page.locator("#controlnet_photo input[type=file]").set_input_files(str(photo))

        # The annotations, side by side; those needing weights name the missing file.
        page.locator("#controlnet_annotations_missing").get_by_text("ControlNetHED.pth").wait_for(timeout=60_000)
        thumbnails = page.locator("#controlnet_annotations img")
        assert thumbnails.count() >= 3   # canny, lineart_standard, scribble_xdog work without weights
        assert page.locator("#controlnet_annotation input[value='canny']").is_checked()
        assert _is_edge_map(_fetch(page, thumbnails.first))
        page.wait_for_function(
            f"() => document.querySelector('#controlnet_model input').value === {controlnet_title!r}",
            timeout=10_000)   # picking canny chose the canny ControlNet

        page.locator("#controlnet_prompt textarea").fill("a street")
        set_slider(page, "controlnet_width", 64)
        set_slider(page, "controlnet_height", 64)
        set_slider(page, "controlnet_steps", 2)
        page.locator("#controlnet_generate").click()
        page.wait_for_function(
            "() => document.querySelector('#controlnet_compare_result img') || document.querySelector('.toast-body')",
            timeout=GENERATE_TIMEOUT * 1000)
        toasts = page.locator(".toast-body").all_inner_texts()
        assert not toasts, toasts
        original = _fetch(page, page.locator("#controlnet_compare_original img").first)
        result = _fetch(page, page.locator("#controlnet_compare_result img").first)
        assert original.size == (96, 96) and not _is_edge_map(original)
        assert np.abs(np.asarray(original, np.int16) - np.asarray(Image.open(photo).convert("RGB"), np.int16)).max() < 3
        assert result.size == (64, 64) and not _is_edge_map(result)
        assert page.locator("#controlnet_gallery .thumbnail-item img").count() == 2   # the image, then its map
        assert page.locator("#controlnet_open_folder").is_visible()   # a local server: 📂 shown (not clicked)

        # 💾 saves the image to log/images with a log.csv line; 🗃️ adds a zip, offered for download.
        page.locator("#save_controlnet").click()
        page.locator("#html_log_controlnet").get_by_text("Saved: 00000-").wait_for(timeout=30_000)
        folder = tmp_path / "log" / "images"
        saved = sorted(folder.glob("*.png"))
        assert len(saved) == 1   # save_selected_only: the picked (first) image, not the map
        with Image.open(saved[0]) as image:
            assert image.size == (64, 64) and "ControlNet 0: " in image.info["parameters"]
        with open(folder / "log.csv", encoding="utf-8", newline="") as file:
            header, line = list(csv.reader(file))
        assert header[:3] == ["prompt", "seed", "width"] and line[0] == "a street"
        assert line[2:4] == ["64", "64"] and line[7] == saved[0].name and line[9] == "tiny-sd1"

        page.locator("#save_zip_controlnet").click()
        page.locator("#html_log_controlnet").get_by_text(".zip").wait_for(timeout=30_000)
        archives = list(folder.glob("*.zip"))
        assert len(archives) == 1 and "_[tiny-sd1]_" in archives[0].name
        with zipfile.ZipFile(archives[0]) as archive:
            names = archive.namelist()
            assert len(names) == 1 and names[0].endswith(".png")
            assert Image.open(io.BytesIO(archive.read(names[0]))).size == (64, 64)
        link = page.locator('#download_files_controlnet a[download$=".zip"]').first
        link.wait_for(timeout=10_000)
        assert page.request.get(link.get_attribute("href")).body() == archives[0].read_bytes()
        assert not page.errors, page.errors
    except Exception:
        print(server.log())
        raise
