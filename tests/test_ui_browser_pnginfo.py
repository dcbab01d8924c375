"""PNG Info, "Send to" and Extras in a real browser: generate → read the PNG back → send to txt2img →
generate again gives the same pixels; Extras upscales an uploaded image.

Set SKIP_BROWSER_TESTS=1 to skip these where no Chromium can be installed (`apt-get install chromium`).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.ui import pick, set_slider

GENERATE_TIMEOUT = 180   # seconds for the first image (includes loading the tiny checkpoint)
PROMPT = 'a lighthouse <img src=x onerror="window.hacked=1"> at dusk'


@pytest.fixture
def server(tiny_sd1_server):
    return tiny_sd1_server


@pytest.fixture
def page(tiny_sd1_page, server):
    try:
        yield tiny_sd1_page
        assert not tiny_sd1_page.errors, tiny_sd1_page.errors
    except BaseException:
        print(server.log())
        raise


def _value(page, selector: str) -> str:
    return page.locator(selector).input_value()


def _wait_for_files(folder, count: int, server) -> list:
    """The PNGs under `folder` once there are `count` of them (the job saves them before the UI shows them)."""
    deadline = time.monotonic() + GENERATE_TIMEOUT
    while time.monotonic() < deadline:
        files = sorted(folder.rglob("*.png")) if folder.exists() else []
        if len(files) >= count:
            return files
        time.sleep(0.25)
    raise AssertionError(f"expected {count} PNG(s) in {folder}:\n{server.log()}")


def test_generate_read_send_to_txt2img_and_generate_the_same_image(page, server, tmp_path):
    outputs = tmp_path / "outputs" / "txt2img-images"
    page.locator("#txt2img_prompt textarea").fill(PROMPT)
    page.locator("#txt2img_neg_prompt textarea").fill("fog")
    pick(page, "txt2img_sampling", "Euler")
    set_slider(page, "txt2img_width", 64)
    set_slider(page, "txt2img_height", 64)
    set_slider(page, "txt2img_steps", 3)
    page.locator("#txt2img_seed input").fill("4321")
    page.locator("#txt2img_generate").click()
    first = _wait_for_files(outputs, 1, server)[0]
    page.locator("#txt2img_generate").wait_for(state="visible", timeout=30_000)

    # Change everything the round trip must restore.
    page.locator("#txt2img_prompt textarea").fill("something else")
    page.locator("#txt2img_neg_prompt textarea").fill("")
    pick(page, "txt2img_sampling", "DPM++ 2M")
    set_slider(page, "txt2img_width", 128)
    set_slider(page, "txt2img_steps", 9)
    page.locator("#txt2img_seed input").fill("-1")

    # PNG Info shows the parameters as text: the <img> in the prompt is not rendered.
    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(first))
    page.wait_for_function(
        "() => document.querySelector('#pnginfo_html_info').innerText.includes('Steps: 3')", timeout=30_000)
    info = page.locator("#pnginfo_html_info")
    text = info.inner_text()
    assert PROMPT in text, text
    assert "Seed: 4321" in text and "Sampler: Euler," in text and "Size: 64x64" in text, text
    assert info.locator("img").count() == 0
    assert page.evaluate("() => window.hacked") is None

    page.locator("#txt2img_tab").click()
    page.locator("#txt2img_prompt textarea").wait_for(state="visible", timeout=10_000)
    page.wait_for_function(
        "() => document.querySelector('#txt2img_seed input').value === '4321'", timeout=10_000)
    assert _value(page, "#txt2img_prompt textarea") == PROMPT
    assert _value(page, "#txt2img_neg_prompt textarea") == "fog"
    assert _value(page, "#txt2img_sampling input") == "Euler"
    assert _value(page, "#txt2img_steps input[type=number]") == "3"
    assert _value(page, "#txt2img_width input[type=number]") == "64"
    assert _value(page, "#txt2img_height input[type=number]") == "64"

    page.locator("#txt2img_generate").click()
    files = _wait_for_files(outputs, 2, server)
    second = next(path for path in files if path != first)
    with Image.open(first) as a, Image.open(second) as b:
        assert a.size == b.size == (64, 64)
        assert np.array_equal(np.asarray(a), np.asarray(b)), "the same parameters gave a different image"
        assert a.info["parameters"] == b.info["parameters"]

    # The gallery's "Send to inpaint": the image lands in the Inpaint sub-tab with its size and seed.
    page.locator("#txt2img_gallery img").first.wait_for(timeout=30_000)
    page.locator("#txt2img_send_to_inpaint").click()
    page.locator("#img2maskimg").wait_for(state="visible", timeout=10_000)
    page.wait_for_function("() => document.querySelector('#img2img_seed input').value === '4321'", timeout=10_000)
    assert _value(page, "#img2img_prompt textarea") == PROMPT
    assert _value(page, "#img2img_width input[type=number]") == "64"
    page.locator("#img2maskimg canvas").first.wait_for(timeout=10_000)


def test_extras_upscales_an_uploaded_image_by_two(page, server, tmp_path):
    source = tmp_path / "small.png"
    Image.new("RGB", (40, 24), (200, 30, 90)).save(source)
    page.get_by_role("tab", name="Extras").click()
    page.locator("#extras_image input[type=file]").set_input_files(str(source))
    page.locator("#extras_image img").first.wait_for(timeout=20_000)
    set_slider(page, "extras_upscaling_resize", 2)
    pick(page, "extras_upscaler_1", "Lanczos")
    page.locator("#extras_generate").click()
    page.locator("#extras_gallery img").first.wait_for(timeout=GENERATE_TIMEOUT * 1000)
    saved = _wait_for_files(tmp_path / "outputs" / "extras-images", 1, server)
    with Image.open(saved[0]) as result:
        assert result.size == (80, 48)
    page.wait_for_function("() => { const img = document.querySelector('#extras_gallery img');"
                           " return img && img.complete && img.naturalWidth > 0; }", timeout=30_000)
    size = page.evaluate("() => { const img = document.querySelector('#extras_gallery img');"
                         " return [img.naturalWidth, img.naturalHeight]; }")
    assert size == [80, 48]
    assert page.locator("#extras_generate").is_visible()
