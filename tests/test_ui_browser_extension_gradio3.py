"""The stand-in Gradio 3 extension of tests/test_extension_gradio3.py in a real browser: its own ToolButton
subclass and A1111's show (not a custom component the page cannot load), the button its on_after_component
callback put next to the prompt writes into txt2img's prompt, its InputAccordion has the checkbox in its header.

Set SKIP_BROWSER_TESTS=1 to skip these where no Chromium can be installed (`apt-get install chromium`).
"""
from __future__ import annotations

import textwrap

import pytest

from tests.fixtures.server import start_server
from tests.test_extension_gradio3 import OLD_GRADIO

SWAP = "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}"


@pytest.fixture
def server(tmp_path):
    script = tmp_path / "extensions" / "old-gradio" / "scripts" / "old.py"
    script.parent.mkdir(parents=True)
    script.write_text(textwrap.dedent(OLD_GRADIO))
    server = start_server(tmp_path, "--skip-install", "--skip-load-model-at-start")
    yield server
    server.stop()


def test_gradio3_extension_controls_show_and_work(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    missing = []
    page.on("response", lambda response: missing.append(response.url) if response.status == 404 else None)
    try:
        page.goto(server.url, wait_until="domcontentloaded")
        page.wait_for_selector("#tab_txt2img", timeout=60_000)
        tool = page.locator("#script_txt2img_old_gradio_tool")
        tool.wait_for(state="visible", timeout=30_000)
        assert SWAP in tool.inner_text()
        page.locator("#script_txt2img_old_gradio_a1111_tool").wait_for(state="visible", timeout=10_000)
        page.locator("#script_txt2img_old_gradio_acc-visible-checkbox").wait_for(timeout=10_000)
        page.locator("#fill_prompt").click()
        page.wait_for_function(
            "() => document.querySelector('#txt2img_prompt textarea').value === 'a filled prompt'", timeout=15_000)
        assert not [url for url in missing if "custom_component" in url], missing
        assert not errors, errors
    except BaseException:
        print(server.log())
        raise
    finally:
        page.close()
