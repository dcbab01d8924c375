"""Extra Networks cards (modules/networks/cards/), without a browser: what each tab lists, previews,
descriptions, user metadata, what a click inserts, sorting, search, thumbnails and HTML escaping."""
from __future__ import annotations

import base64
import io
import json
import math
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from modules.models.registry import CheckpointRegistry, HashCache
from modules.networks import cards
from modules.networks.hypernetwork import HypernetworkRegistry
from modules.networks.lora import LoraRegistry
from modules.networks.textual_inversion import EmbeddingDatabase
from tests.fixtures.tiny_embeddings import random_vectors, write_png_embedding, write_safetensors_emb_params
from tests.fixtures.tiny_loras import write_lora

HOSTILE = "<img src=x onerror=alert(1)>"


def _lora(path: Path, output_name: str | None = None) -> Path:
    return write_lora({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, path, output_name=output_name)


def _image(path: Path, size=(40, 60), color=(200, 30, 30), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture
def networks(tmp_path):
    lora_dir, emb_dir, ckpt_dir = tmp_path / "Lora", tmp_path / "embeddings", tmp_path / "Stable-diffusion"
    for folder in (lora_dir, emb_dir, ckpt_dir):
        folder.mkdir()
    _lora(lora_dir / "tinystyle.safetensors")
    _lora(lora_dir / "sub" / "trained-run.safetensors", output_name="runalias")
    write_safetensors_emb_params(emb_dir / "tinyword.safetensors", random_vectors())
    (ckpt_dir / "tiny-sd1.safetensors").write_bytes(b"\0" * 64)
    ns = SimpleNamespace(loras=LoraRegistry(lora_dir), embeddings=EmbeddingDatabase(emb_dir))
    ns.checkpoints = CheckpointRegistry(ckpt_dir, HashCache(None), hashing=False)
    ns.dirs = SimpleNamespace(lora=lora_dir, embeddings=emb_dir, checkpoints=ckpt_dir)
    return ns


def _card(networks, kind, key):
    found = cards.find_card(cards.list_cards(kind, networks, networks.checkpoints), key)
    assert found is not None, f"no {kind} card {key!r}"
    return found


# --------------------------------------------------------------------------- listing

def test_tabs_list_what_the_registries_hold(networks):
    assert cards.available_kinds(networks) == ["textual_inversion", "checkpoints", "lora"]   # no hypernetworks
    loras = cards.list_cards("lora", networks, networks.checkpoints)
    assert sorted(card.key for card in loras) == ["tinystyle", "trained-run"]
    assert {card.relative for card in loras} == {"tinystyle.safetensors", "sub/trained-run.safetensors"}
    embedding = _card(networks, "textual_inversion", "tinyword")
    assert embedding.prompt == "tinyword"
    checkpoint = _card(networks, "checkpoints", "tiny-sd1.safetensors")
    assert checkpoint.prompt is None and checkpoint.name == "tiny-sd1" and checkpoint.title
    assert cards.list_cards("hypernetworks", networks, networks.checkpoints) == []
    assert cards.list_cards("nonsense", networks, networks.checkpoints) == []


def test_a_key_from_the_browser_never_becomes_a_path(networks):
    listed = cards.list_cards("lora", networks, networks.checkpoints)
    for key in ("../../etc/passwd", str(networks.dirs.lora / "tinystyle.safetensors"), "tinystyle.safetensors",
                None, 3, {"key": "tinystyle"}):
        assert cards.find_card(listed, key) is None


def test_hypernetworks_tab_appears_when_the_backend_lists_them(tmp_path, networks):
    hn = tmp_path / "hypernetworks" / "anime.pt"
    hn.parent.mkdir()
    hn.write_bytes(b"x")
    networks.hypernetworks = HypernetworkRegistry(hn.parent)   # lists files without opening them
    assert cards.available_kinds(networks) == ["textual_inversion", "hypernetworks", "checkpoints", "lora"]
    card = _card(networks, "hypernetworks", "anime")
    assert card.prompt == "<hypernet:anime:1>"
    assert card.relative == "anime.pt" and card.path == hn.resolve()
    assert cards.toggle_card(card, "a cat, <hypernet:anime:0.3>", "") == ("a cat", "")
    (hn.parent / "later.pt").write_bytes(b"x")
    cards.refresh("hypernetworks", networks)
    assert [c.key for c in cards.list_cards("hypernetworks", networks)] == ["anime", "later"]


# --------------------------------------------------------------------------- previews and descriptions

@pytest.mark.parametrize("name", ["tinystyle.png", "tinystyle.preview.png", "tinystyle.jpg", "tinystyle.jpeg",
                                  "tinystyle.preview.webp", "tinystyle.gif"])
def test_preview_next_to_the_file(networks, name):
    preview = _image(networks.dirs.lora / name)
    assert _card(networks, "lora", "tinystyle").preview == preview


def test_preview_order_and_absence(networks):
    model = networks.dirs.lora / "tinystyle.safetensors"
    assert cards.find_preview(model) is None
    _image(networks.dirs.lora / "tinystyle.preview.jpg")
    png = _image(networks.dirs.lora / "tinystyle.png")
    assert cards.find_preview(model) == png                      # A1111: png before preview.png before jpg
    _image(networks.dirs.lora / "other.png")
    assert cards.find_preview(networks.dirs.lora / "sub" / "trained-run.safetensors") is None


def test_png_embedding_is_its_own_preview(networks):
    write_png_embedding(networks.dirs.embeddings / "pictured.png", random_vectors(), "pictured")
    networks.embeddings.refresh()
    card = _card(networks, "textual_inversion", "pictured")
    assert card.preview == networks.dirs.embeddings / "pictured.png"


def test_description_files_and_user_metadata(networks):
    lora_dir = networks.dirs.lora
    (lora_dir / "tinystyle.description.txt").write_text("from description.txt\n", encoding="utf-8")
    assert _card(networks, "lora", "tinystyle").description == "from description.txt"
    (lora_dir / "tinystyle.txt").write_text("from txt", encoding="utf-8")
    assert _card(networks, "lora", "tinystyle").description == "from txt"
    cards.write_user_metadata(lora_dir / "tinystyle.safetensors", {"description": "from metadata"})
    assert _card(networks, "lora", "tinystyle").description == "from metadata"


# --------------------------------------------------------------------------- user metadata

def test_user_metadata_round_trip(networks):
    model = networks.dirs.lora / "tinystyle.safetensors"
    assert cards.read_user_metadata(model) == {}
    stored = cards.write_user_metadata(model, {
        "description": "desc", "activation text": "trigger word", "preferred weight": 0.7,
        "negative text": "blurry", "notes": "note <b>", "unknown": "dropped", "sd version": "SD2"})
    assert stored == {"description": "desc", "activation text": "trigger word", "preferred weight": 0.7,
                      "negative text": "blurry", "notes": "note <b>"}
    path = networks.dirs.lora / "tinystyle.json"             # A1111's file beside the model
    assert json.loads(path.read_text(encoding="utf-8")) == stored
    assert cards.read_user_metadata(model) == stored
    assert [p.name for p in networks.dirs.lora.iterdir() if p.name.startswith(".")] == []   # no temp files

    # Keys A1111 wrote that we do not edit are kept; an emptied field is removed.
    data = json.loads(path.read_text(encoding="utf-8"))
    data["sd version"] = "SD1"
    path.write_text(json.dumps(data), encoding="utf-8")
    cards.write_user_metadata(model, {"description": "", "preferred weight": None, "notes": "n"})
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk["sd version"] == "SD1" and on_disk["notes"] == "n"
    assert "description" not in on_disk and "preferred weight" not in on_disk


@pytest.mark.parametrize("data, field", [
    ({"preferred weight": math.nan}, "preferred weight"),
    ({"preferred weight": math.inf}, "preferred weight"),
    ({"preferred weight": -0.1}, "preferred weight"),
    ({"preferred weight": 2.5}, "preferred weight"),
    ({"preferred weight": "heavy"}, "preferred weight"),
    ({"preferred weight": True}, "preferred weight"),
    ({"preferred weight": [1]}, "preferred weight"),
    ({"description": 5}, "description"),
    ({"notes": "x" * (cards.MAX_TEXT + 1)}, "notes"),
    ({"vae": "nope.safetensors"}, "vae"),
])
def test_user_metadata_validation(networks, data, field):
    model = networks.dirs.lora / "tinystyle.safetensors"
    with pytest.raises(ValueError, match=re.escape(field)):
        cards.write_user_metadata(model, data, vae_choices=["Automatic", "None", "good.safetensors"])
    assert not (networks.dirs.lora / "tinystyle.json").exists()


def test_user_metadata_accepts_numeric_text_and_known_vae(networks):
    model = networks.dirs.checkpoints / "tiny-sd1.safetensors"
    stored = cards.write_user_metadata(model, {"preferred weight": "1.5", "vae": "good.safetensors"},
                                       vae_choices=["Automatic", "None", "good.safetensors"])
    assert stored == {"preferred weight": 1.5, "vae": "good.safetensors"}


def test_damaged_user_metadata_is_ignored(networks):
    (networks.dirs.lora / "tinystyle.json").write_text("{not json", encoding="utf-8")
    assert cards.read_user_metadata(networks.dirs.lora / "tinystyle.safetensors") == {}
    (networks.dirs.lora / "tinystyle.json").write_text(
        json.dumps({"preferred weight": "NaN", "activation text": ["x"], "notes": "ok"}), encoding="utf-8")
    assert cards.read_user_metadata(networks.dirs.lora / "tinystyle.safetensors") == {"notes": "ok"}
    assert _card(networks, "lora", "tinystyle").prompt == "<lora:tinystyle:1>"


# --------------------------------------------------------------------------- what a click inserts

def test_lora_insert_text_uses_preferred_weight_and_activation_text(networks):
    assert _card(networks, "lora", "tinystyle").prompt == "<lora:tinystyle:1>"
    model = networks.dirs.lora / "tinystyle.safetensors"
    cards.write_user_metadata(model, {"preferred weight": 0.75, "activation text": "tiny style"})
    assert _card(networks, "lora", "tinystyle").prompt == "<lora:tinystyle:0.75>, tiny style"
    cards.write_user_metadata(model, {"preferred weight": 0})          # A1111: 0 means "not set"
    assert _card(networks, "lora", "tinystyle").prompt == "<lora:tinystyle:1>"


def test_lora_alias_from_file(networks):
    assert _card(networks, "lora", "trained-run").prompt == "<lora:runalias:1>"
    # Two files with the same alias: the alias would be ambiguous, so the file name is used.
    _lora(networks.dirs.lora / "copy.safetensors", output_name="runalias")
    networks.loras.refresh()
    assert _card(networks, "lora", "trained-run").prompt == "<lora:trained-run:1>"


def test_click_appends_with_comma_and_a_second_click_removes(networks):
    card = _card(networks, "lora", "tinystyle")
    prompt, negative = cards.toggle_card(card, "", "")
    assert prompt == "<lora:tinystyle:1>"
    prompt, negative = cards.toggle_card(card, "a cat", "")
    assert prompt == "a cat, <lora:tinystyle:1>"
    assert cards.toggle_card(card, prompt, negative) == ("a cat", "")
    assert cards.toggle_card(card, "a cat,", "")[0] == "a cat, <lora:tinystyle:1>"
    # A tag the user re-weighted is still recognised; the rest of the prompt stays as it was.
    assert cards.toggle_card(card, "a cat, <lora:tinystyle:0.3>, night", "")[0] == "a cat, night"
    assert cards.toggle_card(card, "<lora:tinystyle:1> a cat", "")[0] == "a cat"
    # Another LoRA whose name starts the same is not touched.
    assert cards.toggle_card(card, "<lora:tinystyle2:1>", "")[0] == "<lora:tinystyle2:1>, <lora:tinystyle:1>"


def test_click_with_activation_and_negative_text(networks):
    cards.write_user_metadata(networks.dirs.lora / "tinystyle.safetensors",
                              {"activation text": "tiny style", "negative text": "blurry", "preferred weight": 0.5})
    card = _card(networks, "lora", "tinystyle")
    prompt, negative = cards.toggle_card(card, "a cat", "lowres")
    assert (prompt, negative) == ("a cat, <lora:tinystyle:0.5>, tiny style", "lowres, blurry")
    assert cards.toggle_card(card, prompt, negative) == ("a cat", "lowres")
    # The negative text is not added twice.
    assert cards.toggle_card(card, "a cat", "blurry") == ("a cat, <lora:tinystyle:0.5>, tiny style", "blurry")


def test_embedding_click_toggles_its_name(networks):
    card = _card(networks, "textual_inversion", "tinyword")
    assert cards.toggle_card(card, "a cat", "") == ("a cat, tinyword", "")
    assert cards.toggle_card(card, "a cat, tinyword, in snow", "") == ("a cat, in snow", "")
    assert cards.toggle_card(card, "tinywords", "")[0] == "tinywords, tinyword"   # a longer word is not it


def test_checkpoint_click_does_not_touch_the_prompt(networks):
    card = _card(networks, "checkpoints", "tiny-sd1.safetensors")
    assert cards.toggle_card(card, "a cat", "x") == ("a cat", "x")


# --------------------------------------------------------------------------- sort and search

def test_sorting(networks):
    lora_dir = networks.dirs.lora
    _lora(lora_dir / "Alpha.safetensors")
    _lora(lora_dir / "zeta10.safetensors")
    _lora(lora_dir / "zeta9.safetensors")
    networks.loras.refresh()
    times = {"Alpha": 300, "tinystyle": 100, "zeta10": 200, "zeta9": 400, "trained-run": 50}
    for card in cards.list_cards("lora", networks):
        os.utime(card.path, (times[card.key], times[card.key]))
    listed = cards.list_cards("lora", networks)
    assert [c.key for c in cards.sort_cards(listed, "Name")] == ["Alpha", "tinystyle", "trained-run", "zeta9",
                                                                 "zeta10"]
    # By path below the folder: sub/trained-run.safetensors sorts before tinystyle.safetensors.
    assert [c.key for c in cards.sort_cards(listed, "Path")] == ["Alpha", "trained-run", "tinystyle", "zeta9",
                                                                 "zeta10"]
    assert [c.key for c in cards.sort_cards(listed, "Date Modified")] == ["trained-run", "tinystyle", "zeta10",
                                                                          "Alpha", "zeta9"]
    assert [c.key for c in cards.sort_cards(listed, "Date Modified", descending=True)] == [
        "zeta9", "Alpha", "zeta10", "tinystyle", "trained-run"]
    assert [c.key for c in cards.sort_cards(listed, "Name", descending=True)][0] == "zeta10"
    assert len(cards.sort_cards(listed, "Date Created")) == 5
    with pytest.raises(ValueError, match="sort mode"):
        cards.sort_cards(listed, "Size")


def test_date_created_sort():
    def card(key, ctime):
        return cards.Card(kind="lora", key=key, name=key, path=Path(key), relative=key, preview=None,
                          description="", mtime=0, ctime=ctime, search_text=key, prompt=key)
    listed = [card("b", 2), card("a", 3), card("c", 1)]
    assert [c.key for c in cards.sort_cards(listed, "Date Created")] == ["c", "b", "a"]
    assert [c.key for c in cards.sort_cards(listed, "Date Created", True)] == ["a", "b", "c"]


def test_search(networks):
    (networks.dirs.lora / "tinystyle.txt").write_text("Watercolor painting", encoding="utf-8")
    listed = cards.list_cards("lora", networks)
    assert [c.key for c in cards.filter_cards(listed, "")] == [c.key for c in listed]
    assert [c.key for c in cards.filter_cards(listed, "TINY")] == ["tinystyle"]
    assert [c.key for c in cards.filter_cards(listed, "watercolor")] == ["tinystyle"]    # description
    assert [c.key for c in cards.filter_cards(listed, "runalias")] == ["trained-run"]    # alias
    assert [c.key for c in cards.filter_cards(listed, "sub/")] == ["trained-run"]        # folder
    assert [c.key for c in cards.filter_cards(listed, "tiny painting")] == ["tinystyle"]  # every word
    assert cards.filter_cards(listed, "tiny nowhere") == []


# --------------------------------------------------------------------------- thumbnails and HTML

def test_thumbnails_are_small_jpegs(networks, tmp_path):
    big = _image(tmp_path / "big.png", size=(1024, 600), mode="RGBA", color=(10, 200, 10, 128))
    uri = cards.ThumbnailCache().get(big)
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        assert image.format == "JPEG" and max(image.size) == cards.THUMBNAIL_SIZE and image.size[1] == 150
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert cards.ThumbnailCache().get(tmp_path / "broken.png") is None
    assert cards.ThumbnailCache().get(tmp_path / "missing.png") is None
    assert cards.ThumbnailCache().get(None) is None


def test_huge_previews_are_not_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(cards.render, "MAX_PREVIEW_PIXELS", 100)   # read where thumbnails are made
    assert cards.make_thumbnail(_image(tmp_path / "p.png", size=(20, 20))) is None


def test_hostile_names_render_as_text(networks):
    _lora(networks.dirs.lora / f"{HOSTILE}.safetensors")
    quote = 'x" onmouseover="alert(2)'
    _lora(networks.dirs.lora / f"{quote}.safetensors")
    (networks.dirs.lora / f"{HOSTILE}.txt").write_text("<script>alert(3)</script>", encoding="utf-8")
    networks.loras.refresh()
    listed = cards.list_cards("lora", networks)
    page = cards.cards_html(listed, "lora", cards.ThumbnailCache())
    assert "<img src=x" not in page and "<script>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in page
    assert 'onmouseover="alert' not in page and "x&quot; onmouseover=&quot;alert(2)" in page
    # The tags themselves are the only elements: one card per file, nothing injected.
    assert page.count('<div class="card') == len(listed) == 4
    assert cards.find_card(listed, HOSTILE).prompt == f"<lora:{HOSTILE}:1>"


def test_empty_tab_says_where_files_go(networks):
    page = cards.cards_html([], "lora", folder_hint="/models/<Lora>")
    assert "Nothing here" in page and "/models/&lt;Lora&gt;" in page


def test_cards_html_has_preview_and_edit_button(networks):
    _image(networks.dirs.lora / "tinystyle.png")
    card = _card(networks, "lora", "tinystyle")
    page = cards.cards_html([card], "lora", cards.ThumbnailCache())
    assert 'data-key="tinystyle"' in page and 'data-kind="lora"' in page
    assert '<img class="preview" src="data:image/jpeg;base64,' in page
    assert 'data-action="edit"' in page
