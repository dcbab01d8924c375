"""The img2img tab and the Hires. fix accordion in a real browser (Playwright + Debian's Chromium, headless).

Set SKIP_BROWSER_TESTS=1 to skip these where no Chromium can be installed.
"""
from __future__ import annotations

import pytest
from PIL import Image

from tests.fixtures.ui import set_slider

GENERATE_TIMEOUT = 120  # seconds for the first image (includes loading the tiny checkpoint)


@pytest.fixture
def server(tiny_sd1_server):
    return tiny_sd1_server


@pytest.fixture
def page(tiny_sd1_page):
    return tiny_sd1_page


def _saved_sizes(folder) -> list[tuple[int, int]]:
    sizes = []
    for path in sorted(folder.rglob("*.png")):
        with Image.open(path) as image:
            sizes.append(image.size)
    return sizes


def _wait_idle(page, tab: str) -> None:
    page.wait_for_function(f"() => document.querySelector('#{tab}_generate').offsetParent !== null"
                           f" && !document.querySelector('#{tab}_interrupt')?.offsetParent", timeout=30_000)


def _shown(canvas, colour: tuple[int, int, int], timeout: float = 10.0) -> bool:
    """Whether the editor's canvas comes to show the uploaded picture (its centre has the picture's colour)."""
    import io
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shot = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
        centre = shot.getpixel((shot.width // 2, shot.height // 2))
        if all(abs(a - b) < 40 for a, b in zip(centre, colour)):
            return True
        time.sleep(0.25)
    return False


def test_inpaint_with_a_painted_mask(page, server, tmp_path):
    try:
        picture = tmp_path / "input.png"
        Image.new("RGB", (96, 64), (200, 30, 30)).save(picture)
        page.get_by_role("tab", name="img2img", exact=True).first.click()
        page.locator("#img2img_prompt textarea").fill("a red wall")

        # Generate without an image: a clear error, and the tab is idle again.
        page.locator("#img2img_generate").click()
        page.get_by_text("img2img: upload an image first").wait_for(timeout=20_000)
        _wait_idle(page, "img2img")
        for close in page.locator(".toast-close").all():
            close.click()

        assert not page.locator("#inpaint_controls").first.is_visible()   # shown on the inpaint sub-tabs only
        page.get_by_role("tab", name="Inpaint", exact=True).click()
        page.locator("#inpaint_controls").first.wait_for(state="visible", timeout=10_000)
        canvas = page.locator("#img2maskimg canvas").first
        for attempt in range(3):
            # A file set before Gradio's editor has set itself up is dropped with a script error in the page
            # ("reading 'reset_layers'"): wait for it, and should it still happen, load the page again.
            if attempt:
                page.reload(wait_until="domcontentloaded")
                page.errors.clear()   # the editor's errors on the page load we gave up on
                page.get_by_role("tab", name="img2img", exact=True).first.click()
                page.locator("#img2img_prompt textarea").fill("a red wall")
                page.get_by_role("tab", name="Inpaint", exact=True).click()
            canvas.wait_for(state="visible", timeout=20_000)   # the editor mounts when its tab is first shown
            page.wait_for_timeout(1000)
            page.locator("#img2maskimg input[type=file]").set_input_files(str(picture))
            if _shown(canvas, (200, 30, 30)):
                break
        else:
            raise AssertionError("the editor never showed the uploaded picture")
        box = canvas.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 60, y - 30)   # the brush is the editor's tool after an upload
        page.mouse.down()
        for step in range(1, 11):
            page.mouse.move(x - 60 + step * 12, y - 30 + step * 6)
        page.mouse.up()

        set_slider(page, "img2img_width", 64)
        set_slider(page, "img2img_height", 64)
        set_slider(page, "img2img_steps", 2)
        page.locator("#img2img_generate").click()
        page.wait_for_function("() => document.querySelector('#img2img_gallery img') || "
                               "document.querySelector('.toast-body')", timeout=GENERATE_TIMEOUT * 1000)
        toasts = page.locator(".toast-body").all_inner_texts()
        assert not toasts, toasts
        page.wait_for_function(
            "() => document.querySelector('#html_info_img2img').innerText.includes('Steps:')", timeout=30_000)
        text = page.locator("#html_info_img2img").inner_text()
        assert "Denoising strength: 0.75" in text, text
        assert "Mask blur: 4" in text, text
        assert "Size: 64x64" in text, text
        _wait_idle(page, "img2img")
        assert _saved_sizes(tmp_path / "outputs" / "img2img-images") == [(64, 64)]
        assert not page.errors, page.errors
    except Exception:
        print(server.log())
        print("img2img info:", page.locator("#html_info_img2img").inner_html(), page.locator(".toast-body").all_inner_texts())
        raise


def test_txt2img_hires_fix_doubles_the_size(page, server, tmp_path):
    try:
        page.locator("#txt2img_prompt textarea").fill("a lighthouse")
        set_slider(page, "txt2img_width", 64)
        set_slider(page, "txt2img_height", 64)
        set_slider(page, "txt2img_steps", 2)
        page.locator("#txt2img_hr-visible-checkbox").check()   # the checkbox in the accordion header
        page.get_by_text("to 128x128").wait_for(timeout=10_000)
        set_slider(page, "txt2img_hires_steps", 2)

        page.locator("#txt2img_generate").click()
        page.locator("#txt2img_gallery img").first.wait_for(timeout=GENERATE_TIMEOUT * 1000)
        page.wait_for_function(
            "() => document.querySelector('#html_info_txt2img').innerText.includes('Steps:')", timeout=30_000)
        text = page.locator("#html_info_txt2img").inner_text()
        assert "Size: 64x64" in text and "Hires upscale: 2" in text and "Hires upscaler: Latent" in text, text
        _wait_idle(page, "txt2img")
        assert _saved_sizes(tmp_path / "outputs" / "txt2img-images") == [(128, 128)]
        page.wait_for_function("() => { const img = document.querySelector('#txt2img_gallery img');"
                               " return img && img.complete && img.naturalWidth > 0; }", timeout=30_000)
        width = page.locator("#txt2img_gallery img").first.evaluate("img => img.naturalWidth")
        assert width == 128
        assert not page.errors, page.errors
    except Exception:
        print(server.log())
        raise
