"""The Gradio UI in a real browser: Playwright driving Debian's Chromium (headless) against webui.py.

Set SKIP_BROWSER_TESTS=1 to skip these where no Chromium can be installed (`apt-get install chromium`).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.fixtures.server import start_server as _start

GENERATE_TIMEOUT = 180   # seconds for the first image (includes loading the tiny checkpoint)


@pytest.fixture
def server_with_checkpoint(tiny_sd1_server):
    return tiny_sd1_server


@pytest.fixture
def server_without_checkpoint(tmp_path):
    server = _start(tmp_path)
    yield server
    server.stop()


def _screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    keep = os.environ.get("UI_SCREENSHOT_DIR")   # to look at the layout after a run
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def _set_slider(page, elem_id: str, value: int) -> None:
    """Type into the number box Gradio puts next to a slider, as a user would."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def test_txt2img_generates_an_image_in_the_browser(browser, server_with_checkpoint, tmp_path):
    server = server_with_checkpoint
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(server.url, wait_until="domcontentloaded")
        checkpoint = page.locator("#setting_sd_model_checkpoint input")
        checkpoint.wait_for(timeout=60_000)
        page.wait_for_function(
            "() => (document.querySelector('#setting_sd_model_checkpoint input') || {}).value"
            "?.includes('tiny-sd1')", timeout=60_000)
        assert not page.locator("#no_checkpoint_message").is_visible()

        prompt = "a red fox in the snow, <b>bold</b>"
        page.locator("#txt2img_prompt textarea").fill(prompt)
        page.wait_for_function(
            "() => /^\\d+\\/75$/.test(document.querySelector('#txt2img_token_counter').innerText.trim())"
            " && document.querySelector('#txt2img_token_counter').innerText.trim() !== '0/75'",
            timeout=20_000)
        page.locator("#txt2img_neg_prompt textarea").fill("blurry")
        _set_slider(page, "txt2img_width", 64)
        _set_slider(page, "txt2img_height", 64)
        _set_slider(page, "txt2img_steps", 2)
        page.locator("#txt2img_seed input").fill("1234")

        page.locator("#txt2img_generate").click()
        page.locator("#txt2img_gallery img").first.wait_for(timeout=GENERATE_TIMEOUT * 1000)
        info = page.locator("#html_info_txt2img")
        page.wait_for_function(
            "() => document.querySelector('#html_info_txt2img').innerText.includes('Steps:')", timeout=30_000)
        text = info.inner_text()
        assert "Steps: 2" in text, text
        assert "Size: 64x64" in text, text
        assert "Seed: 1234" in text, text
        assert "Negative prompt: blurry" in text, text
        assert prompt in text, text                       # shown as text: the <b> was escaped, not rendered
        assert info.locator("b").count() == 0
        assert page.locator("#txt2img_generate").is_visible()   # back to idle
        assert not page.locator("#txt2img_interrupt").is_visible()

        saved = sorted((tmp_path / "outputs" / "txt2img-images").rglob("*.png"))
        assert saved, f"no PNG saved under outputs/txt2img-images:\n{server.log()}"

        page.locator("#txt2img_reuse_seed").click()
        page.wait_for_function("() => document.querySelector('#txt2img_seed input').value === '1234'",
                               timeout=10_000)

        # ↙️ with an empty prompt box reads params.txt, the last generation.
        page.locator("#txt2img_prompt textarea").fill("")
        _set_slider(page, "txt2img_steps", 30)
        page.locator("#paste").click()
        page.wait_for_function(
            "() => document.querySelector('#txt2img_prompt textarea').value.startsWith('a red fox')"
            " && document.querySelector('#txt2img_steps input[type=number]').value === '2'", timeout=10_000)

        # The per-model prediction-type override: stored for this checkpoint and the model reloaded with it.
        page.locator("#setting_prediction_type input").click()
        page.get_by_role("option", name="v_prediction").click()
        page.get_by_text("SD 1.x (v-prediction)").first.wait_for(timeout=60_000)
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["sd_model_prediction_overrides"] == {"tiny-sd1.safetensors": "v_prediction"}

        _screenshot(page, tmp_path / "txt2img.png")
        assert not errors, errors
    except Exception:
        print(server.log())
        raise
    finally:
        page.close()


def test_ui_without_checkpoint_says_where_to_put_one(browser, server_without_checkpoint, tmp_path):
    server = server_without_checkpoint
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(server.url, wait_until="domcontentloaded")
        message = page.locator("#no_checkpoint_message")
        message.wait_for(timeout=60_000)
        text = message.inner_text()
        assert "No checkpoint found" in text
        assert str((tmp_path / "models" / "Stable-diffusion").resolve()) in text
        assert page.locator("#txt2img_prompt textarea").is_visible()

        # A value the request model rejects is named, and nothing is queued.
        page.locator("#txt2img_prompt textarea").fill("a lighthouse")
        _set_slider(page, "txt2img_width", 100)
        page.locator("#txt2img_generate").click()
        page.get_by_text("Width: must be a multiple of 8").wait_for(timeout=20_000)
        for close in page.locator(".toast-close").all():
            close.click()

        # Generating without a checkpoint fails as a job: the error is shown and the UI is idle again.
        _set_slider(page, "txt2img_width", 64)
        page.locator("#txt2img_generate").click()
        page.wait_for_function(
            "() => document.querySelector('#html_info_txt2img').innerText.includes('no checkpoint found')",
            timeout=30_000)
        assert page.locator("#txt2img_generate").is_visible()
        assert not page.locator("#txt2img_interrupt").is_visible()
        assert not list((tmp_path / "outputs").rglob("*.png"))
        _screenshot(page, tmp_path / "no-checkpoint.png")
    except Exception:
        print(server.log())
        raise
    finally:
        page.close()
