"""What a new user meets first, in a real browser (Playwright + Debian's Chromium, headless), on one page of one
server: a non-image upload refused at the upload (and not in the way of Generate), a portrait result shown whole
in the gallery, a number typed outside its range explained instead of an HTTP error, Esc interrupting from
anywhere on the page, and extensions' scripts whose DOMContentLoaded listeners and A1111 hooks run.

Set SKIP_BROWSER_TESTS=1 to skip these where no Chromium can be installed (`apt-get install chromium`).
"""
from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import CHROMIUM_ARGS
from tests.fixtures.server import start_server
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_safetensors
from tests.fixtures.ui import set_slider

GENERATE_TIMEOUT = 180_000   # ms, the first image includes loading the tiny checkpoint
UNIT = "txt2img_controlnet_ControlNet-0"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    checkpoint = data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    checkpoint.parent.mkdir(parents=True)
    write_safetensors(build_tiny_model("sd1"), checkpoint)
    server = start_server(data)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(server):
    """One page for the module's tests, in order; HTTP answers of 500 and up and script errors are collected."""
    if os.environ.get("SKIP_BROWSER_TESTS") == "1":
        pytest.skip("SKIP_BROWSER_TESTS=1")
    if shutil.which("chromium") is None:
        pytest.fail("Chromium is not installed: run `apt-get install -y chromium` as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                             args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.errors, page.server_errors = [], []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("response", lambda response: response.status >= 500 and page.server_errors.append(
            f"{response.status} {response.url}"))
        page.goto(server.url, wait_until="domcontentloaded")
        page.wait_for_function("() => (document.querySelector('#setting_sd_model_checkpoint input') || {})"
                               ".value?.includes('tiny-sd1')", timeout=60_000)
        try:
            yield page
        except BaseException:
            print(server.log())
            raise
        finally:
            browser.close()


def _toasts(page) -> list[str]:
    return [toast.inner_text() for toast in page.locator(".toast-body").all()]


def _close_toasts(page) -> None:
    page.evaluate("() => document.querySelectorAll('.toast-close').forEach(button => button.click())")


def test_a_non_image_is_refused_at_its_upload_and_a_portrait_result_shows_whole(page, server, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not an image\n")
    page.locator("#txt2img_controlnet .label-wrap").first.click()          # the unit stays disabled
    page.locator(f"#{UNIT}_input_image input[type=file]").set_input_files(str(fake))
    page.get_by_text("“holiday.png” was not loaded").wait_for(timeout=20_000)
    shown = " ".join(_toasts(page))
    assert "ControlNet Unit 0 › Control image" in shown and "not a supported image" in shown, shown
    assert "/tmp" not in shown and "Traceback" not in shown and "preprocess" not in shown, shown
    page.wait_for_function(f"() => !document.querySelector('#{UNIT}_input_image img')", timeout=10_000)
    _close_toasts(page)
    page.locator("#txt2img_controlnet .label-wrap").first.click()

    # Generate is not blocked by the disabled unit; a 96×160 result is shown whole, not cut at the bottom.
    page.locator("#txt2img_prompt textarea").fill("a tall lighthouse")
    set_slider(page, "txt2img_width", 96)
    set_slider(page, "txt2img_height", 160)
    set_slider(page, "txt2img_steps", 1)
    page.locator("#txt2img_generate").click()
    page.locator("#txt2img_gallery img").first.wait_for(timeout=GENERATE_TIMEOUT)
    page.wait_for_function("() => { const img = document.querySelector('#txt2img_gallery img');"
                           " return img && img.complete && img.naturalHeight > 0; }", timeout=30_000)
    box = page.evaluate("""() => {
        const img = document.querySelector('#txt2img_gallery img');
        const wrap = img.closest('.grid-wrap');
        const r = img.getBoundingClientRect(), w = wrap.getBoundingClientRect();
        const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
        const shownHeight = img.naturalHeight * scale, top = r.top + (r.height - shownHeight) / 2;
        return {natural: [img.naturalWidth, img.naturalHeight], fit: getComputedStyle(img).objectFit,
                shownBottom: top + shownHeight, wrapBottom: w.bottom, scroll: wrap.scrollHeight - wrap.clientHeight};
    }""")
    assert box["natural"] == [96, 160], box
    assert box["fit"] == "contain", box
    assert box["shownBottom"] <= box["wrapBottom"] + 1 and box["scroll"] <= 1, box   # nothing below the fold
    assert "Size: 96x160" in page.locator("#html_info_txt2img").inner_text()
    assert not page.server_errors, page.server_errors
    _close_toasts(page)


def test_a_number_outside_its_range_is_explained_without_an_http_error(page):
    box = page.locator("#txt2img_width input[type=number]")
    box.fill("")
    box.press_sequentially("7")        # typed, as a user does: each keystroke is an input event
    box.press("Enter")
    note = page.locator("#txt2img_width .range-note")
    note.wait_for(timeout=10_000)
    assert note.inner_text() == "Width: 7 is below the minimum, 64; set to 64"
    assert box.input_value() == "64"
    box = page.locator("#txt2img_steps input[type=number]")
    box.fill("500")
    box.blur()
    page.locator("#txt2img_steps .range-note").wait_for(timeout=10_000)
    assert page.locator("#txt2img_steps .range-note").inner_text() == "Sampling steps: 500 is above the maximum, 150; set to 150"
    page.wait_for_timeout(500)
    assert not page.server_errors, page.server_errors
    set_slider(page, "txt2img_width", 64)
    set_slider(page, "txt2img_height", 64)


def test_escape_anywhere_on_the_page_interrupts_the_job(page):
    set_slider(page, "txt2img_steps", 150)
    set_slider(page, "txt2img_batch_count", 4)
    page.evaluate("() => document.addEventListener('click', event => {"
                  " if (event.target.closest('#txt2img_interrupt')) window.interruptClicked = true; }, true)")
    page.locator("#txt2img_generate").click()
    page.locator("#txt2img_interrupt").wait_for(state="visible", timeout=GENERATE_TIMEOUT)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.mouse.move(5, 5)                              # the pointer somewhere else, focus on no prompt box
    page.keyboard.press("Escape")
    page.wait_for_function("() => window.interruptClicked === true", timeout=10_000)
    page.locator("#txt2img_generate").wait_for(state="visible", timeout=60_000)
    set_slider(page, "txt2img_batch_count", 1)
    set_slider(page, "txt2img_steps", 1)


def test_extension_scripts_see_domcontentloaded_and_a1111s_page_hooks(page):
    # The worked example of docs/extensions.md (extensions-builtin/prompt-suffix): its DOMContentLoaded
    # listener sets a hover text on the suffix boxes once they are built.
    page.locator("#script_txt2img_prompt_suffix_accordion .label-wrap").click()
    page.wait_for_function("() => (document.querySelector(\"#script_txt2img_prompt_suffix_suffix textarea\") || {})"
                           ".title?.startsWith('Appended to the prompt')", timeout=10_000)
    # Added now, long after the page loaded: each still runs once.
    page.evaluate("""() => {
        window.hookRuns = {dom: 0, ui: 0};
        document.addEventListener('DOMContentLoaded', () => window.hookRuns.dom++);
        onUiLoaded(() => window.hookRuns.ui++);
        onUiTabChange(() => { window.tabChanged = get_uiCurrentTab().textContent.trim(); });
    }""")
    page.wait_for_function("() => window.hookRuns.dom === 1 && window.hookRuns.ui === 1", timeout=5_000)
    assert page.evaluate("() => gradioApp().getElementById('txt2img_prompt') !== null")
    page.get_by_role("tab", name="img2img", exact=True).click()
    page.wait_for_function("() => window.tabChanged === 'img2img'", timeout=5_000)
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.hookRuns") == {"dom": 1, "ui": 1}
    assert not page.errors, page.errors


def test_the_merger_shows_whole_checkpoint_titles(page):
    page.get_by_role("tab", name="Checkpoint Merger", exact=True).click()
    for role in ("primary", "secondary", "tertiary"):
        box = page.locator(f"#modelmerger_{role}_model_name input")
        box.click()
        page.get_by_role("option", name="tiny-sd1.safetensors", exact=False).first.click()
        page.wait_for_function(f"() => document.querySelector('#modelmerger_{role}_model_name input')"
                               ".value.startsWith('tiny-sd1.safetensors [')", timeout=10_000)
        page.keyboard.press("Tab")
        cut = box.evaluate("input => input.scrollWidth - input.clientWidth")
        assert cut <= 1, f"{role}: {box.input_value()!r} is cut off by {cut}px"
