"""An extension's UI in a real browser: its tab, its always-on accordion and dropdown script in txt2img,
its JavaScript and CSS on the page; a broken extension does not stop the page.

Set SKIP_BROWSER_TESTS=1 to skip these where no Chromium can be installed (`apt-get install chromium`).
"""
from __future__ import annotations

import pytest

from tests.fixtures.sample_extension import write_broken_extensions, write_sample_extension
from tests.fixtures.server import start_server
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_safetensors


@pytest.fixture
def server(tmp_path):
    checkpoint = tmp_path / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    checkpoint.parent.mkdir(parents=True)
    write_safetensors(build_tiny_model("sd1"), checkpoint)
    write_sample_extension(tmp_path / "extensions")
    write_broken_extensions(tmp_path / "extensions")
    server = start_server(tmp_path, "--skip-install")
    yield server
    server.stop()


def test_extension_ui_appears_in_the_page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(server.url, wait_until="domcontentloaded")
        page.wait_for_selector("#tab_txt2img", timeout=60_000)
        # always-on script: its accordion and controls in txt2img, with A1111's element ids
        accordion = page.locator("#script_txt2img_sample_alwayson_accordion")
        accordion.wait_for(timeout=30_000)
        page.locator("#script_txt2img_sample_alwayson_strength").wait_for(state="visible", timeout=10_000)
        # dropdown script: listed in txt2img's Script dropdown; choosing it shows its controls
        script_list = page.locator("#tab_txt2img #script_list input")
        script_list.click()
        page.get_by_role("option", name="Sample dropdown").click()
        page.locator("#script_txt2img_sample_dropdown_repeats").wait_for(state="visible", timeout=10_000)
        # the extension's own tab, styled by its style.css
        page.get_by_role("tab", name="Sample Tab").click()
        hello = page.locator("#sample_ext_hello")
        hello.wait_for(state="visible", timeout=10_000)
        assert "Hello from the sample extension" in hello.inner_text()
        color = hello.evaluate("node => getComputedStyle(node).color")
        assert color == "rgb(1, 2, 3)"
        # its javascript ran; the broken extensions only left a message
        assert page.evaluate("() => window.sampleExtensionLoaded") is True
        page.get_by_role("tab", name="txt2img").click()
        assert page.get_by_text("Bad UI: could not build its controls").count() >= 1
        assert not errors, errors
    except BaseException:
        print(server.log())
        raise
    finally:
        page.close()
