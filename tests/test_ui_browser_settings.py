"""The Settings tab in a real browser: search, change an option, Apply, Reload UI, and it is still changed."""
from __future__ import annotations

import json


def test_a_setting_applied_in_the_browser_survives_a_reload(tiny_sd1_page, tiny_sd1_server, tmp_path):
    page = tiny_sd1_page
    page.get_by_role("tab", name="Settings").click()
    page.locator("#settings_search input, #settings_search textarea").first.fill("file format")
    grid_format = page.locator("#setting_grid_format")
    grid_format.wait_for(state="visible", timeout=20_000)
    page.wait_for_function("() => !document.querySelector('#setting_samples_save')?.checkVisibility()",
                           timeout=20_000)
    assert page.locator("#setting_samples_format").is_visible()

    page.locator("#setting_samples_format label", has_text="jpg").click()
    page.locator("#settings_submit").click()
    page.wait_for_function(
        "() => document.querySelector('#settings_result')?.innerText.includes('1 settings changed: samples_format')",
        timeout=20_000)
    assert json.loads((tmp_path / "config.json").read_text())["samples_format"] == "jpg"

    with page.expect_navigation(wait_until="domcontentloaded"):
        page.locator("#settings_restart_gradio").click()       # "Reload UI" reloads the page
    page.get_by_role("tab", name="Settings").click()
    page.locator("#setting_samples_format").wait_for(state="visible", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#setting_samples_format input[value=jpg]')?.checked",
                           timeout=20_000)
    assert not page.locator("#setting_samples_format input[value=png]").is_checked()
    assert page.errors == []
