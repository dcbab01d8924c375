"""A1111's UI-level modules extensions import (issue 21): `infotext_utils` / `generation_parameters_copypaste`,
`ui_common`, `call_queue`, `ui_extra_networks` and the names on `modules.ui`, used as extensions use them."""
from __future__ import annotations

import csv
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from modules import shared
from modules.jobs import JobQueue
from modules.options import Options

SAMPLE = ("girl with an artist's beret, (determined:1.2), blue eyes\n"
          "Negative prompt: ugly, fat\n"
          'Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 965400086, Size: 512x768, Model hash: 45dee52b, '
          'Lora hashes: "add_detail: 7c6bad76eb54, x: 1", Version: v1.10.1')

# What A1111 1.10's parse_generation_parameters returns for SAMPLE (no styles, nothing skipped).
A1111_DICT = {
    "Steps": "20", "Sampler": "DPM++ 2M Karras", "CFG scale": "7", "Seed": "965400086", "Size-1": "512",
    "Size-2": "768", "Model hash": "45dee52b", "Lora hashes": "add_detail: 7c6bad76eb54, x: 1", "Version": "v1.10.1",
    "Prompt": "girl with an artist's beret, (determined:1.2), blue eyes", "Negative prompt": "ugly, fat",
    "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0, "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler", "Hires checkpoint": "Use same checkpoint", "Hires prompt": "",
    "Hires negative prompt": "", "Mask mode": "Inpaint masked", "Masked content": "original",
    "Inpaint area": "Whole picture", "Masked area padding": 32, "RNG": "GPU", "Schedule type": "Automatic",
    "Schedule max sigma": 0, "Schedule min sigma": 0, "Schedule rho": 0, "VAE Encoder": "Full", "VAE Decoder": "Full",
    "FP8 weight": "Disable", "Emphasis": "Original", "Refiner switch by sampling steps": False,
}


def test_parse_generation_parameters_gives_a1111s_dict():
    from modules import generation_parameters_copypaste, infotext_utils

    assert generation_parameters_copypaste is infotext_utils   # the old name is the same module, as in A1111
    assert infotext_utils.parse_generation_parameters(SAMPLE, []) == A1111_DICT
    skipped = infotext_utils.parse_generation_parameters(SAMPLE, ["Seed", "Model hash"])
    assert "Seed" not in skipped and "Model hash" not in skipped and skipped["Steps"] == "20"
    assert infotext_utils.quote("a, b") == '"a, b"' and infotext_utils.unquote('"a, b"') == "a, b"


def test_create_refresh_button_refreshes_the_components_choices():
    from modules import ui, ui_common

    assert ui.create_refresh_button is ui_common.create_refresh_button   # A1111's two import paths
    listed = ["a"]
    with gr.Blocks() as demo:
        dropdown = gr.Dropdown(choices=["a"], value="a", label="Preset")
        button = ui.create_refresh_button(dropdown, lambda: listed.append("b"), lambda: {"choices": list(listed)},
                                          "refresh_preset")
    assert isinstance(button, gr.Button) and button.value == ui.refresh_symbol and button.elem_id == "refresh_preset"
    event = next(fn for fn in demo.fns.values() if (button._id, "click") in fn.targets)
    assert event.outputs == [dropdown]
    update = event.fn()
    assert update["choices"] == ["a", "b"] and dropdown.choices == ["a", "b"]   # also for a page loaded later


def test_wrap_gradio_call_returns_errors_as_a1111():
    from modules import call_queue

    def fails(text):
        raise ValueError(f"bad <{text}>")

    assert call_queue.wrap_gradio_call(lambda x: [x, "<p>ok</p>"])(1) == (1, "<p>ok</p>")
    assert call_queue.wrap_gradio_call(fails)("x") == (None, "", "<div class='error'>ValueError: bad &lt;x&gt;</div>")
    wrapped = call_queue.wrap_gradio_call(fails, extra_outputs=[1, 2, 3])("y")
    assert wrapped[:3] == (1, 2, 3) and "ValueError: bad &lt;y&gt;" in wrapped[3]
    timed = call_queue.wrap_gradio_call(lambda: ["<p>done</p>"], add_stats=True)()
    assert timed[0].startswith("<p>done</p><div class='performance'>") and "Time taken" in timed[0]


def test_wrap_gradio_gpu_call_runs_as_a_job_of_the_queue(monkeypatch):
    from modules import call_queue

    queue = JobQueue()
    monkeypatch.setattr(shared, "services", lambda: SimpleNamespace(queue=queue))
    ran_on = []

    def work(task_id, value):
        ran_on.append((threading.current_thread().name, queue.current.id))
        return [value * 2, "<p>ok</p>"]

    try:
        result = call_queue.wrap_gradio_gpu_call(work)("task(abc)", 21)
    finally:
        queue.shutdown()
    assert result[0] == 42 and result[1].startswith("<p>ok</p>")
    assert ran_on == [("job-worker", "task(abc)")]   # the job worker, under A1111's task id


def test_save_files_saves_gallery_images_with_log_csv(tmp_path, monkeypatch):
    from modules import ui_common

    options = Options(None)
    monkeypatch.setattr(shared, "services", lambda: SimpleNamespace(options=options, paths=SimpleNamespace(
        data=tmp_path, outputs=tmp_path / "outputs")))
    picture = tmp_path / "uploaded.png"
    Image.new("RGB", (8, 8), "red").save(picture)
    data = {"infotexts": ["a red square\nSteps: 3, Sampler: Euler, Seed: 7, Size: 8x8"], "index_of_first_image": 0,
            "width": 8, "height": 8, "sampler_name": "Euler", "cfg_scale": 7, "steps": 3,
            "sd_model_name": "tiny", "sd_model_hash": "abc"}
    files, message = ui_common.save_files(json.dumps(data), [(Image.open(picture), None)], False, 0)
    saved = tmp_path / "log" / "images"
    written = [path for path in saved.iterdir() if path.suffix == ".png"]
    assert len(written) == 1 and files["value"] == [str(written[0])] and message == f"<p>Saved: {written[0].name}</p>"
    rows = list(csv.reader((saved / "log.csv").open(encoding="utf-8")))
    assert rows[1][:3] == ["a red square", "7", "8"]
    assert ui_common.plaintext_to_html("a <b>\nc") == "<p>a &lt;b&gt;<br>\nc</p>"


def test_an_extension_page_registers_and_becomes_cards(tmp_path):
    from modules import ui_extra_networks
    from modules.ui import a1111_extra_networks

    model = tmp_path / "style.safetensors"
    model.write_bytes(b"x")

    class StylePage(ui_extra_networks.ExtraNetworksPage):
        def __init__(self):
            super().__init__("My Styles")

        def list_items(self):
            yield {"name": "style", "filename": str(model), "description": "a style", "search_terms": ["mine"],
                   "prompt": ui_extra_networks.quote_js("<style:x:") + " + opts.extra_networks_default_multiplier + "
                   + ui_extra_networks.quote_js(">")}
            yield {"name": "odd", "filename": str(model), "prompt": "alert(1)"}

    page = StylePage()
    ui_extra_networks.register_page(page)
    try:
        assert page in ui_extra_networks.extra_pages and page.extra_networks_tabname == "my_styles"
        cards = a1111_extra_networks.cards_of(page, {"extra_networks_default_multiplier": 0.8})
    finally:
        ui_extra_networks.extra_pages.remove(page)
    assert [card.name for card in cards] == ["style", "odd"]
    assert cards[0].prompt == "<style:x:0.8>" and cards[0].description == "a style" and cards[0].kind == "my_styles"
    assert cards[1].prompt is None   # not a string expression: never run
    assert ui_extra_networks.quote_js('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(AttributeError, match="ExtraNetworksPage.create_card_view_html, which does not exist here"):
        ui_extra_networks.ExtraNetworksPage.create_card_view_html   # noqa: B018 - an extension patching it


def test_modules_ui_names_and_missing_ones():
    import modules.ui as ui

    assert ui.switch_values_symbol == "\u21c5" and ui.gr_show(False) == {"visible": False, "__type__": "update"}
    assert ui.versions_html().startswith("version: <a>v1.10.1")   # the A1111 version whose behaviour this follows
    with pytest.raises(AttributeError, match=r"modules\.ui\.sd_hijack_thing, which does not exist here"):
        ui.sd_hijack_thing   # noqa: B018
    from modules import call_queue, infotext_utils, ui_common

    for module in (ui_common, call_queue, infotext_utils):
        with pytest.raises(AttributeError, match=rf"{module.__name__}\.nope, which does not exist here"):
            module.nope   # noqa: B018


def test_image_from_url_text_opens_only_the_pages_files(tmp_path):
    import gradio as gr

    from modules.infotext_utils import image_from_url_text
    from modules.images import encode_base64_png

    uploads = Path(gr.utils.get_upload_folder())
    uploads.mkdir(parents=True, exist_ok=True)
    uploaded = uploads / f"a1111-ui-modules-{tmp_path.name}.png"
    Image.new("RGB", (4, 2), "blue").save(uploaded)
    elsewhere = tmp_path / "private.png"
    Image.new("RGB", (4, 2), "blue").save(elsewhere)
    try:
        assert image_from_url_text([(str(uploaded), "caption")]).size == (4, 2)   # a gallery's value
        assert image_from_url_text({"name": str(uploaded), "is_file": True}).size == (4, 2)   # Gradio 3's
        with pytest.raises(ValueError, match="not a file of this page"):
            image_from_url_text({"path": str(elsewhere)})
    finally:
        uploaded.unlink()
    assert image_from_url_text(encode_base64_png(Image.new("RGB", (3, 3)), None)).size == (3, 3)
    assert image_from_url_text([]) is None and image_from_url_text(None) is None


def test_create_output_panel_shows_the_picked_images_infotext():
    from modules import ui_common

    with gr.Blocks() as demo:
        panel = ui_common.create_output_panel("myext", "outputs/myext")
    assert isinstance(panel.gallery, gr.Gallery) and panel.generation_info.elem_id == "generation_info_myext"
    picked = next(fn for fn in demo.fns.values()
                  if (panel.gallery._id, "select") in fn.targets and panel.generation_info in fn.inputs)
    info = json.dumps({"infotexts": ["first", "second <i>"]})
    assert picked.fn(info, "<p>old</p>", SimpleNamespace(index=1)) == "<p>second &lt;i&gt;</p>"
    assert picked.fn("not json", "<p>old</p>", SimpleNamespace(index=1)) == "<p>old</p>"
