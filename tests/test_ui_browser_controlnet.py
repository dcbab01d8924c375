"""The ControlNet accordion in a real browser (Playwright + Debian's Chromium, headless): a photo guides txt2img
through canny and a tiny SD1 ControlNet, and the annotation map shows next to the image.

Set SKIP_BROWSER_TESTS=1 to skip these where no Chromium can be installed.
"""
from __future__ import annotations

import io
import urllib.request

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.controlnet.models import ControlNetRegistry
from tests.fixtures.png_bombs import blank_png
from tests.fixtures.tiny_controlnets import build_tiny_controlnet, write_controlnet
from tests.fixtures.ui import pick, set_slider

GENERATE_TIMEOUT = 180   # seconds (includes loading the checkpoint and the ControlNet)
UNIT = "txt2img_controlnet_ControlNet-0"


@pytest.fixture
def controlnet_title(tmp_path) -> str:
    """A tiny SD1 ControlNet in the data dir's models/ControlNet, written before the server starts."""
    folder = tmp_path / "models" / "ControlNet"
    folder.mkdir(parents=True)
    write_controlnet(build_tiny_controlnet("sd1"), folder / "control_tiny_sd15_canny.safetensors")
    return ControlNetRegistry(folder).titles()[0]


@pytest.fixture
def tiny_sd1_server(controlnet_title, tiny_sd1_server):
    """conftest's server, on a data dir that has the ControlNet too."""
    return tiny_sd1_server


@pytest.fixture
def page(tiny_sd1_page):
    return tiny_sd1_page


def _photo(path) -> None:
    """Photo-like: a soft gradient with a bright disc and a dark bar, edges for canny to find."""
    x = np.linspace(40, 200, 96, dtype=np.float32)[None, :]
    image = Image.fromarray(np.repeat(np.broadcast_to(x, (96, 96))[:, :, None], 3, axis=2).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((12, 12, 48, 48), fill=(250, 250, 250))
    draw.rectangle((50, 64, 90, 86), fill=(10, 10, 10))
    image.save(path)


def _fetch(page, img) -> Image.Image:
    """The picture an <img> shows, as the browser got it."""
    return Image.open(io.BytesIO(page.request.get(img.get_attribute("src")).body())).convert("RGB")


def _is_edge_map(image: Image.Image) -> bool:
    """Black with white edges: canny's map."""
    pixels = np.asarray(image.convert("L"))
    white = (pixels > 200).mean()
    return 0.005 < white < 0.5 and ((pixels < 30) | (pixels > 220)).mean() > 0.95


def test_a_photo_guides_txt2img_and_its_map_shows_beside_the_image(page, tiny_sd1_server, controlnet_title, tmp_path):
    server = tiny_sd1_server
    try:
        photo = tmp_path / "photo.png"
        _photo(photo)
        page.locator("#txt2img_prompt textarea").fill("a street")
        set_slider(page, "txt2img_width", 64)
        set_slider(page, "txt2img_height", 64)
        set_slider(page, "txt2img_steps", 2)

        page.locator("#txt2img_controlnet .label-wrap").first.click()   # open the accordion
        page.get_by_role("tab", name="ControlNet Unit 0", exact=True).wait_for(timeout=10_000)
        page.locator(f"#{UNIT}_input_image input[type=file]").set_input_files(str(photo))
        page.locator(f"#{UNIT}_input_image img").first.wait_for(timeout=20_000)
        page.locator(f"#{UNIT}_controlnet_enable_checkbox input").check()

        # Choosing canny shows its two thresholds.
        assert not page.locator(f"#{UNIT}_controlnet_threshold_A_slider").is_visible()
        pick(page, f"{UNIT}_controlnet_preprocessor_dropdown", "canny")
        page.locator(f"#{UNIT}_controlnet_threshold_A_slider").get_by_text("Low Threshold").wait_for(timeout=10_000)
        assert page.locator(f"#{UNIT}_controlnet_threshold_B_slider").get_by_text("High Threshold").is_visible()
        pick(page, f"{UNIT}_controlnet_model_dropdown", controlnet_title)

        # 💥 shows the map beside the photo.
        page.locator(f"#{UNIT}_controlnet_trigger_preprocessor").click()
        preview = page.locator(f"#{UNIT}_generated_image img").first
        preview.wait_for(timeout=30_000)
        assert _is_edge_map(_fetch(page, preview))

        page.locator("#txt2img_generate").click()
        thumbnails = page.locator("#txt2img_gallery .thumbnail-item img")
        page.wait_for_function(
            "() => document.querySelectorAll('#txt2img_gallery .thumbnail-item img').length >= 2"
            " || document.querySelector('.toast-body')", timeout=GENERATE_TIMEOUT * 1000)
        toasts = page.locator(".toast-body").all_inner_texts()
        assert not toasts, toasts
        assert thumbnails.count() == 2   # the image, then the annotation map
        page.wait_for_function(
            "() => document.querySelector('#html_info_txt2img').innerText.includes('Steps:')", timeout=30_000)
        text = page.locator("#html_info_txt2img").inner_text()
        assert 'ControlNet 0: "Module: canny, Model: control_tiny_sd15_canny' in text, text
        generated, detected = (_fetch(page, thumbnails.nth(index)) for index in range(2))
        assert generated.size == (64, 64) and not _is_edge_map(generated)
        assert _is_edge_map(detected)
        assert not page.errors, page.errors
    except Exception:
        print(server.log())
        raise


def test_an_upload_over_the_pixel_cap_is_refused_and_the_ui_stays_usable(page, tiny_sd1_server, tmp_path):
    """The API refuses a 4200² image at once; through the UI it is refused when it arrives, naming the file."""
    server = tiny_sd1_server
    try:
        huge = tmp_path / "huge.png"
        huge.write_bytes(blank_png(4200, 4200))          # 17.6 megapixels: over the 16.8 cap
        page.locator("#txt2img_controlnet .label-wrap").first.click()
        page.get_by_role("tab", name="ControlNet Unit 0", exact=True).wait_for(timeout=10_000)
        page.locator(f"#{UNIT}_input_image input[type=file]").set_input_files(str(huge))
        page.locator(".toast-body").first.wait_for(timeout=30_000)   # refused when it arrives
        toasts = " ".join(page.locator(".toast-body").all_inner_texts())
        assert "Control image: “huge.png” was not loaded: image is too large" in toasts, toasts
        assert "/tmp" not in toasts and "Traceback" not in toasts, toasts
        assert page.locator(f"#{UNIT}_generated_image img").count() == 0
        with urllib.request.urlopen(server.url + "internal/ping", timeout=1) as ping:
            assert ping.status == 200
        # still usable: a picture within the cap previews
        photo = tmp_path / "photo.png"
        _photo(photo)
        page.locator(".toast-body button[aria-label='Close']").first.click()
        assert page.locator(f"#{UNIT}_input_image img").count() == 0   # the refused file was taken out
        page.locator(f"#{UNIT}_input_image input[type=file]").set_input_files(str(photo))
        page.locator(f"#{UNIT}_controlnet_trigger_preprocessor").click()
        page.locator(f"#{UNIT}_generated_image img").first.wait_for(timeout=30_000)
    except Exception:
        print(server.log())
        raise
