"""The Train tab in a real browser (issue 22): Create embedding, then Train it on a small dataset; the page says
where the trained file is and draws the loss chart. At 1280 px every sub-tab shows in the bar, and Train LoRA and
Train ControlNet train with their forms left at their defaults. Set SKIP_BROWSER_TESTS=1 to skip where no Chromium
is."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

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
    pairs = tmp_path / "pairs"   # ControlNet's: images, and conditions/ of the same names
    (pairs / "conditions").mkdir(parents=True)
    for index, corner in enumerate([(8, 8), (34, 30)]):
        photo = Image.new("RGB", (64, 64), (40, 60, 200))
        ImageDraw.Draw(photo).ellipse((*corner, corner[0] + 20, corner[1] + 20), fill=(220, 30, 30))
        photo.save(pairs / f"{index}.png")
        (pairs / f"{index}.txt").write_text("a red ball")
        condition = Image.new("RGB", (64, 64), "black")
        ImageDraw.Draw(condition).ellipse((*corner, corner[0] + 20, corner[1] + 20), fill="white")
        condition.save(pairs / "conditions" / f"{index}.png")
    server = start_server(tmp_path, "--skip-install")
    server.dataset, server.pairs = dataset, pairs
    yield server
    server.stop()


def fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def set_slider(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Enter")


def train_and_wait(page, button: str, expected: str) -> str:
    """Click `button` and wait for its outcome: `expected` in the message, a failure, or an error's toast."""
    page.locator(f"#{button}").click()
    page.wait_for_function("expected => ['failed', expected].some(text => "
                           "document.querySelector('#ti_error').innerText.includes(text))"
                           " || document.querySelector('.toast-body')", arg=expected, timeout=120_000)
    toasts = page.locator(".toast-body").all_inner_texts()
    assert not toasts, toasts
    return page.locator("#ti_error").inner_text()


SUB_TABS = ["Prepare", "Create embedding", "Create hypernetwork", "Train", "Train LoRA", "Train ControlNet"]


def test_every_sub_tab_shows_and_lora_and_controlnet_train_from_their_default_forms(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(server.url, wait_until="domcontentloaded")
        page.locator("#txt2img_prompt").wait_for(timeout=60_000)
        page.locator("#tabs").get_by_role("tab", name="Train", exact=True).click()
        bar = page.locator("#train_tabs")
        hidden = [name for name in SUB_TABS if not bar.get_by_role("tab", name=name, exact=True).is_visible()]
        assert not hidden, f"in Gradio's overflow menu at 1280 px: {hidden}"

        # only what a user must fill; the DreamBooth accordion stays closed (its text fields never drawn)
        bar.get_by_role("tab", name="Train LoRA", exact=True).click()
        fill(page, "train_lora_name", "tile")
        fill(page, "train_lora_dataset_directory", str(server.dataset))
        set_slider(page, "train_lora_rank", "4")
        set_slider(page, "train_lora_resolution", "64")
        fill(page, "train_lora_steps", "2")
        outcome = train_and_wait(page, "train_train_lora", "tile.safetensors")
        assert "Training finished at step 2" in outcome, outcome
        assert (tmp_path / "models" / "Lora" / "tile.safetensors").exists()

        bar.get_by_role("tab", name="Train ControlNet", exact=True).click()
        fill(page, "train_controlnet_name", "ball")
        fill(page, "train_controlnet_dataset_directory", str(server.pairs))
        fill(page, "train_controlnet_condition_folder", "conditions")
        set_slider(page, "train_controlnet_width", "64")
        set_slider(page, "train_controlnet_height", "64")
        fill(page, "train_controlnet_steps", "2")
        outcome = train_and_wait(page, "train_train_controlnet", "ball.safetensors")
        assert "Training finished at step 2" in outcome, outcome
        assert (tmp_path / "models" / "ControlNet" / "ball.safetensors").exists()
        assert not errors, errors
    except BaseException:
        print(server.log())
        raise
    finally:
        page.close()


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
