"""The Train tab in a real browser (issue 22): Create embedding, then Train it on a small dataset; the page says
where the trained file is and draws the loss chart. Set SKIP_BROWSER_TESTS=1 to skip where no Chromium is."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.server import start_server
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_safetensors


@pytest.fixture
def server(tmp_path):
    checkpoint = tmp_path / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    checkpoint.parent.mkdir(parents=True)
    write_safetensors(build_tiny_model("sd1"), checkpoint)
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(dataset / f"{index}.png")
        (dataset / f"{index}.txt").write_text("a speckled tile")
    server = start_server(tmp_path, "--skip-install")
    server.dataset = dataset
    yield server
    server.stop()


def fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def test_create_then_train_an_embedding_in_the_train_tab(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(server.url, wait_until="domcontentloaded")
        page.locator("#txt2img_prompt").wait_for(timeout=60_000)
        page.locator("#tabs").get_by_role("tab", name="Train", exact=True).click()
        page.get_by_role("tab", name="Create embedding").click()
        fill(page, "train_new_embedding_name", "tile")
        page.locator("#train_create_embedding").click()
        page.wait_for_function("() => document.querySelector('#ti_error').innerText.includes('Created')",
                               timeout=60_000)
        assert (tmp_path / "embeddings" / "tile.pt").exists()

        page.locator("#train_tabs").get_by_role("tab", name="Train", exact=True).click()
        page.locator("#train_embedding input").click()
        page.get_by_role("option", name="tile", exact=True).click()
        fill(page, "train_dataset_directory", str(server.dataset))
        for elem_id in ("train_training_width", "train_training_height"):
            box = page.locator(f"#{elem_id} input[type=number]")
            box.fill("64")
            box.press("Enter")
        fill(page, "train_steps", "4")
        fill(page, "train_create_image_every", "2")
        page.locator("#train_train_embedding").click()
        page.wait_for_function("() => document.querySelector('#ti_error').innerText.includes('Training finished')",
                               timeout=120_000)
        assert "Training finished at step 4" in page.locator("#ti_error").inner_text()
        assert page.locator("#ti_loss_chart img").first.is_visible()   # the loss chart, drawn
        # the previews of steps 2 and 4 in the gallery
        page.wait_for_function("() => document.querySelectorAll('#ti_gallery img').length >= 2", timeout=30_000)
        assert list((tmp_path / "textual_inversion").glob("*/tile/textual_inversion_loss.csv"))
        assert not errors, errors
    except BaseException:
        print(server.log())
        raise
    finally:
        page.close()
