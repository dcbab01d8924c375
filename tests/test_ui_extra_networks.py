"""Extra Networks cards, styles and the SD VAE quicksetting in a real browser (Playwright + Debian's Chromium).

One server, one page, one generation: a LoRA card click puts `<lora:tinystyle:1>` into the prompt, the
🛠️ editor changes what the card inserts, a selected style reaches the infotext, and SD VAE "None" is
stored in config.json. Set SKIP_BROWSER_TESTS=1 to skip where no Chromium can be installed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.server import start_server
from tests.fixtures.ui import pick, set_slider
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_safetensors
from tests.fixtures.tiny_embeddings import random_vectors, write_safetensors_emb_params
from tests.fixtures.tiny_loras import kohya_lora, write_lora

GENERATE_TIMEOUT = 120
HOSTILE = "<img src=x onerror=alert(1)>"
STYLES_CSV = 'name,prompt,negative_prompt\nfancy,"{prompt}, oil painting",lowres\n'


@pytest.fixture
def server(tmp_path):
    model = build_tiny_model("sd1")
    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    write_safetensors(model, tmp_path / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    write_safetensors(build_tiny_model("sd1", seed=1), tmp_path / "models" / "Stable-diffusion" / "zz-other.safetensors")
    lora = write_lora(kohya_lora(model), tmp_path / "models" / "Lora" / "tinystyle.safetensors")
    Image.new("RGB", (96, 128), (200, 30, 30)).save(lora.with_suffix(".png"))
    write_lora(kohya_lora(model, seed=1), tmp_path / "models" / "Lora" / f"{HOSTILE}.safetensors")
    (tmp_path / "embeddings").mkdir()
    write_safetensors_emb_params(tmp_path / "embeddings" / "tinyword.safetensors", random_vectors())
    (tmp_path / "styles.csv").write_text(STYLES_CSV, encoding="utf-8")
    running = start_server(tmp_path)
    yield running
    running.stop()


def _prompt_is(page, expected: str, timeout: int = 15_000) -> None:
    page.wait_for_function("(expected) => document.querySelector('#txt2img_prompt textarea').value === expected",
                           arg=expected, timeout=timeout)


def test_extra_networks_styles_and_vae_in_the_browser(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    try:
        page.goto(server.url, wait_until="domcontentloaded")
        page.wait_for_function(
            "() => (document.querySelector('#setting_sd_model_checkpoint input') || {}).value"
            "?.includes('tiny-sd1')", timeout=60_000)
        page.locator("#txt2img_prompt textarea").fill("a cat")

        # Extra Networks → Lora: the card with its preview (a base64 thumbnail, not a served file).
        page.locator("#txt2img_extra_networks").get_by_text("Extra Networks").first.click()
        page.get_by_role("tab", name="Lora").click()
        card = page.locator('#txt2img_lora_cards .card[data-key="tinystyle"]')
        card.wait_for(timeout=20_000)
        assert card.locator("img.preview").get_attribute("src").startswith("data:image/jpeg;base64,")
        assert card.locator(".name").inner_text() == "tinystyle"
        hostile = page.locator("#txt2img_lora_cards .card", has_text=HOSTILE)
        assert hostile.count() == 1                                 # the name is text, not an element
        assert page.locator('#txt2img_lora_cards img[src="x"]').count() == 0

        # A click adds the tag after ", "; a second click takes it out again (A1111 toggles).
        card.click()
        _prompt_is(page, "a cat, <lora:tinystyle:1>")
        card.click()
        _prompt_is(page, "a cat")

        # 🛠️: activation text and preferred weight, written to models/Lora/tinystyle.json.
        card.locator("[data-action=edit]").click()
        editor = page.locator("#txt2img_extra_networks_edit")
        editor.wait_for(state="visible", timeout=10_000)
        editor.locator("#txt2img_extra_edit_activation_text textarea").fill("tiny style")
        set_slider(page, "txt2img_extra_edit_preferred_weight", 0.5)
        editor.locator("#txt2img_extra_edit_save").click()
        editor.wait_for(state="hidden", timeout=10_000)
        metadata = json.loads((tmp_path / "models" / "Lora" / "tinystyle.json").read_text(encoding="utf-8"))
        assert metadata == {"activation text": "tiny style", "preferred weight": 0.5}, metadata
        page.locator('#txt2img_lora_cards .card[data-key="tinystyle"]').click()
        _prompt_is(page, "a cat, <lora:tinystyle:0.5>, tiny style")

        # The other tabs list what their registries hold.
        page.get_by_role("tab", name="Textual Inversion").click()
        page.locator('#txt2img_textual_inversion_cards .card[data-key="tinyword"]').wait_for(timeout=10_000)
        # A checkpoint card switches the model, as the top-bar dropdown does; then back again.
        page.get_by_role("tab", name="Checkpoints").click()
        for name in ("zz-other", "tiny-sd1"):
            page.locator(f'#txt2img_checkpoints_cards .card[data-key="{name}.safetensors"]').click()
            page.wait_for_function(
                "(name) => document.querySelector('#setting_sd_model_checkpoint input').value.startsWith(name)",
                arg=name + ".safetensors", timeout=60_000)

        # A style picked in the Styles dropdown goes with the request and shows in the infotext.
        pick(page, "txt2img_styles", "fancy")
        set_slider(page, "txt2img_width", 64)
        set_slider(page, "txt2img_height", 64)
        set_slider(page, "txt2img_steps", 2)
        page.locator("#txt2img_generate").click()
        page.wait_for_function(
            "() => document.querySelector('#html_info_txt2img').innerText.includes('Steps:')",
            timeout=GENERATE_TIMEOUT * 1000)
        text = page.locator("#html_info_txt2img").inner_text()
        assert "a cat, <lora:tinystyle:0.5>, tiny style, oil painting" in text, text
        assert "Negative prompt: lowres" in text, text
        assert "Lora hashes: " in text and "tinystyle: " in text, text
        assert "Steps: 2" in text, text

        # 📋 merges the selected styles into the prompt boxes and clears the selection.
        page.locator("#txt2img_style_apply").click()
        _prompt_is(page, "a cat, <lora:tinystyle:0.5>, tiny style, oil painting")
        page.wait_for_function("() => document.querySelector('#txt2img_neg_prompt textarea').value === 'lowres'",
                               timeout=10_000)
        assert page.locator("#txt2img_styles").get_by_text("fancy").count() == 0

        # SD VAE in the quicksettings: "None" is stored in config.json.
        pick(page, "setting_sd_vae", "None")
        page.wait_for_function("() => document.querySelector('#setting_sd_vae input').value === 'None'",
                               timeout=10_000)
        config = tmp_path / "config.json"
        for _ in range(50):
            if config.exists() and json.loads(config.read_text()).get("sd_vae") == "None":
                break
            page.wait_for_timeout(100)
        assert json.loads(config.read_text())["sd_vae"] == "None"

        page.locator("#txt2img_extra_networks").scroll_into_view_if_needed()
        page.get_by_role("tab", name="Lora").click()
        _screenshot(page, tmp_path / "extra-networks.png")
        assert not errors, errors
    except Exception:
        print(server.log())
        raise
    finally:
        page.close()


def _screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    keep = os.environ.get("UI_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


# --------------------------------------------------------------------------- without a browser

class _FrozenOptions:
    sd_vae = "Automatic"


class _VaeServices:
    def __init__(self, error: Exception | None = None):
        self.options, self.error, self.calls = _FrozenOptions(), error, []

    def update_options(self, changes, *, from_api):
        self.calls.append((changes, from_api))
        if self.error is not None:
            raise self.error
        self.options.sd_vae = changes["sd_vae"]


def test_sd_vae_quicksetting_stores_the_choice_and_reverts_a_refused_one():
    from modules.ui import topbar

    services = _VaeServices()
    topbar.set_vae(services, "None")
    assert services.calls == [({"sd_vae": "None"}, False)] and services.options.sd_vae == "None"
    topbar.set_vae(services, "None")                     # Gradio's second `input` for one pick: nothing to do
    assert len(services.calls) == 1

    refused = _VaeServices(ValueError("settings are frozen (--freeze-settings)"))
    with pytest.warns(UserWarning, match="frozen"):
        update = topbar.set_vae(refused, "None")
    assert update["value"] == "Automatic"                 # the dropdown goes back to what is stored


def test_selected_styles_go_into_the_request():
    from modules.ui.request_form import request_data

    assert request_data({"styles": ["fancy", "dark"]})["styles"] == ["fancy", "dark"]
    assert request_data({"styles": None})["styles"] == []
