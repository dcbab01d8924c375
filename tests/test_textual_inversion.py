"""Textual-inversion embeddings: formats, the folder database, prompt matching, chunking and the encoder hook."""
from __future__ import annotations

import hashlib
import json
import os
from types import SimpleNamespace

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from modules.models.files import ModelFileError
from modules.models.tokenizer import BOS_ID, EOS_ID, clip_tokenizer
from modules.networks import textual_inversion as ti
from tests.fixtures import tiny_embeddings as te
from tests.fixtures.tiny_checkpoints import write_malicious_pickle

SD = {"": te.TINY_WIDTH}
SDXL = {"clip_l": te.TINY_WIDTH, "clip_g": te.TINY_WIDTH}
REFINER = {"clip_g": te.TINY_WIDTH}


def tokenize(text: str) -> list[int]:
    return clip_tokenizer()(text, add_special_tokens=False, truncation=False).input_ids


def make_embedding(name: str, count: int = 1, width: int = te.TINY_WIDTH, seed: int = 0) -> ti.Embedding:
    return ti.Embedding(name=name, vectors={"": te.random_vectors(count, width, seed)}, path=None)


# --------------------------------------------------------------------------- formats

def test_each_format_loads(tmp_path):
    vec = te.random_vectors(3)
    a1111 = ti.load_embedding(te.write_a1111_pt(tmp_path / "my-style.pt", vec, name="something-else"))
    assert a1111.name == "my-style"             # A1111 names .pt files after the stem, not the inner "name"
    assert torch.equal(a1111.vectors[""], vec) and a1111.vectors[""].requires_grad is False
    assert (a1111.step, a1111.sd_checkpoint, a1111.sd_checkpoint_name) == (500, "abcdef01", "tiny-sd1")
    assert (a1111.vector_count, a1111.shape, a1111.is_sdxl) == (3, 32, False)

    old = ti.load_embedding(te.write_parameterdict_pt(tmp_path / "old.pt", vec))
    assert torch.equal(old.vectors[""], vec) and old.step is None

    emb_params = ti.load_embedding(te.write_safetensors_emb_params(tmp_path / "st.safetensors", vec[:2]))
    assert emb_params.name == "st" and torch.equal(emb_params.vectors[""], vec[:2])

    concept = ti.load_embedding(te.write_diffusers_bin(tmp_path / "learned_embeds.bin", vec[0]))
    assert concept.vectors[""].shape == (1, 32) and torch.equal(concept.vectors[""][0], vec[0])

    clip_l, clip_g = te.random_vectors(2, 32, seed=1), te.random_vectors(2, 48, seed=2)
    sdxl = ti.load_embedding(te.write_sdxl_embedding(tmp_path / "xl.safetensors", clip_l, clip_g))
    assert sdxl.is_sdxl and set(sdxl.vectors) == {"clip_l", "clip_g"}
    assert (sdxl.vector_count, sdxl.shape) == (2, 80)
    assert torch.equal(sdxl.vectors_for("clip_g"), clip_g) and sdxl.vectors_for("") is None

    png = ti.load_embedding(te.write_png_embedding(tmp_path / "card.png", vec[:2], name="png-name"))
    assert png.name == "png-name" and png.step == 100
    assert torch.allclose(png.vectors[""], vec[:2])


@pytest.mark.parametrize("content, message", [
    ({"lora_unet_a.lora_up.weight": torch.zeros(4, 4), "lora_unet_a.lora_down.weight": torch.zeros(4, 4)},
     "2 tensors"),
    ({"string_to_param": {"*": torch.zeros(1, 32), "x": torch.zeros(1, 32)}}, "exactly one tensor"),
    ({"clip_l": torch.zeros(2, 32), "clip_g": torch.zeros(3, 32)}, "clip_l has 2 vectors but clip_g has 3"),
    ({"emb_params": torch.zeros(2, 32, dtype=torch.int64)}, "not floating point"),
    ({"emb_params": torch.zeros(2, 3, 32)}, "expected [vectors, width]"),
    ({"step": 3}, "not a textual-inversion embedding"),
])
def test_other_content_is_refused_with_a_reason(tmp_path, content, message):
    path = tmp_path / "thing.pt"
    torch.save(content, path)
    with pytest.raises(ModelFileError, match="thing.pt") as error:
        ti.load_embedding(path)
    assert message in str(error.value)


# --------------------------------------------------------------------------- the database

@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "embeddings"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    te.write_a1111_pt(root / "easynegative.pt", te.random_vectors(2, seed=1))
    te.write_safetensors_emb_params(root / "sub" / "bad-hands-5.safetensors", te.random_vectors(3, seed=2))
    te.write_diffusers_bin(root / "sub" / "deeper" / "concept.bin", te.random_vectors(1, seed=3)[0])
    te.write_a1111_pt(root / "wide.pt", te.random_vectors(2, 48, seed=4))
    te.write_sdxl_embedding(root / "xl-style.safetensors", te.random_vectors(2, seed=5), te.random_vectors(2, seed=6))
    te.write_png_embedding(root / "card.png", te.random_vectors(1, seed=7), name="png-style")
    te.write_preview_png(root / "easynegative.preview.png")
    te.write_preview_png(root / "just-a-picture.png")
    te.write_a1111_pt(root / "sub" / "easynegative.pt", te.random_vectors(2, seed=8))    # same name, deeper
    te.write_a1111_pt(root / "too-long.pt", te.random_vectors(76, seed=9))
    te.write_a1111_pt(root / ".hidden" / "secret.pt", te.random_vectors(1))
    (root / "empty.pt").write_bytes(b"")
    (root / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    (root / "notes.txt").write_text("not an embedding")
    marker = tmp_path / "pwned"
    write_malicious_pickle(root / "evil.pt", marker)
    return SimpleNamespace(root=root, marker=marker)


def test_database_picks_what_fits_each_model_and_skips_the_rest(folder):
    db = ti.EmbeddingDatabase(folder.root)
    db.refresh()
    assert not folder.marker.exists()            # the malicious pickle never ran

    usable, skipped = db.for_model(SD)
    assert set(usable) == {"easynegative", "bad-hands-5", "concept", "png-style"}
    assert usable["easynegative"].path == folder.root / "easynegative.pt"   # the top-level file wins
    assert "width 48" in skipped["wide"] and "width 32" in skipped["wide"]
    assert "SDXL embedding" in skipped["xl-style"]
    assert "76 vectors" in skipped["too-long"]
    assert "refused to load" in skipped["evil"] and "evil.pt" in skipped["evil"]
    assert "garbage.safetensors" in skipped["garbage"]
    assert "already loaded" in skipped["sub/easynegative.pt"]
    for absent in ("empty", "secret", "notes", "just-a-picture", "easynegative.preview"):
        assert absent not in usable and absent not in skipped

    usable, skipped = db.for_model(SDXL)
    assert set(usable) == {"xl-style"}
    assert "SD1/SD2-style embedding of width 32" in skipped["easynegative"]
    assert "clip_l 32, clip_g 32" in skipped["easynegative"]

    usable, _ = db.for_model(REFINER)           # clip_g only: SDXL files and one-encoder files of its width
    assert {"xl-style", "easynegative", "concept"} <= set(usable)
    assert not folder.marker.exists()


def test_api_listing_has_a1111_shape(folder):
    db = ti.EmbeddingDatabase(folder.root)
    listing = db.api_listing(SD)
    json.dumps(listing)
    assert set(listing) == {"loaded", "skipped"}
    assert listing["loaded"]["easynegative"] == {"step": 500, "sd_checkpoint": "abcdef01",
                                                 "sd_checkpoint_name": "tiny-sd1", "shape": 32, "vectors": 2}
    assert listing["loaded"]["concept"]["step"] is None
    assert listing["skipped"]["wide"]["shape"] == 48
    assert listing["skipped"]["xl-style"] == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                              "shape": 64, "vectors": 2}
    assert "evil" not in listing["skipped"]          # unreadable files are not embeddings (A1111 lists none)
    xl = db.api_listing(SDXL)
    assert set(xl["loaded"]) == {"xl-style"} and "easynegative" in xl["skipped"]
    assert set(db.api_listing(None)["loaded"]) >= {"easynegative", "wide", "xl-style"}


def test_refresh_sees_new_changed_and_removed_files(tmp_path):
    root = tmp_path / "embeddings"
    root.mkdir()
    db = ti.EmbeddingDatabase(root)
    assert db.for_model(SD) == ({}, {})
    path = te.write_a1111_pt(root / "style.pt", te.random_vectors(1))
    db.refresh()
    assert db.for_model(SD)[0]["style"].vector_count == 1
    te.write_a1111_pt(path, te.random_vectors(4))
    os.utime(path, ns=(1, 1))    # a new mtime even on coarse-timestamp filesystems
    db.refresh()
    assert db.for_model(SD)[0]["style"].vector_count == 4
    path.unlink()
    db.refresh()
    assert db.for_model(SD) == ({}, {})
    assert ti.EmbeddingDatabase(tmp_path / "missing").for_model(SD) == ({}, {})


def test_shorthash_and_ti_hashes_infotext(tmp_path):
    path = te.write_a1111_pt(tmp_path / "a:b,c.pt", te.random_vectors(1))
    embedding = ti.load_embedding(path)
    assert embedding.shorthash() == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    other = ti.load_embedding(te.write_safetensors_emb_params(tmp_path / "other.safetensors", te.random_vectors(1)))
    assert ti.ti_hashes([embedding, other, embedding]) == f"abc: {embedding.shorthash()}, other: {other.shorthash()}"


# --------------------------------------------------------------------------- prompts

def test_matching_prefers_the_longest_name_and_handles_multi_token_names():
    embeddings = {name: make_embedding(name) for name in ("easy", "easynegative", "bad", "bad-hands-5")}
    assert tokenize("easynegative") != tokenize("easy") + tokenize("negative")   # "easy" vs "easy</w>"
    ids = tokenize("bad-hands-5, bad hands, EasyNegative, easy going, easy negative")
    found = ti.find_embeddings_in_tokens(ids, embeddings, tokenize)
    assert [(position, embedding.name) for position, embedding in found] == [
        (0, "bad-hands-5"), (6, "bad"), (9, "easynegative"), (12, "easy"), (15, "easy")]
    # The default tokenizer is the same CLIP one.
    assert ti.find_embeddings_in_tokens(ids, embeddings) == found
    assert ti.find_embeddings_in_tokens(ids, {}, tokenize) == []
    assert ti.name_token_ids("bad-hands-5") == tuple(tokenize("bad-hands-5"))


def test_prompt_chunking_keeps_embeddings_whole():
    from modules.prompts.chunks import split_into_chunks

    emb = make_embedding("easynegative", count=4)
    chunks = split_into_chunks("cat " * 73 + "easynegative dog", embeddings={"easynegative": emb})
    assert [len(chunk.tokens) for chunk in chunks] == [73, 5]
    assert chunks[1].fixes == [(0, emb)]


# --------------------------------------------------------------------------- the encoder hook

@pytest.fixture(scope="module")
def encoders():
    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=1, projection_dim=32,
                            bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return CLIPTextModel(config).eval(), CLIPTextModelWithProjection(config).eval()


def _ids(chunk: list[int]) -> torch.Tensor:
    ids = [BOS_ID] + chunk + [EOS_ID]
    return torch.tensor([ids + [EOS_ID] * (77 - len(ids))])


@pytest.mark.parametrize("which, key", [(0, ""), (0, "clip_l"), (1, "clip_g")])
def test_vectors_inserted_changes_only_from_the_embedding_on_and_leaves_no_trace(encoders, which, key):
    encoder = encoders[which]
    module = ti.token_embedding_module(encoder)
    assert module.weight.shape == (49408, 32)
    prompt = tokenize("a photo of a cat")
    offset = 3
    chunk = prompt[:offset] + [ti.PLACEHOLDER_ID] * 2 + prompt[offset:]
    embedding = ti.Embedding("style", {"": te.random_vectors(2, seed=11)}, None)
    if key:   # SDXL file: each encoder gets its own vectors
        embedding = ti.Embedding("style", {"clip_l": te.random_vectors(2, seed=11),
                                           "clip_g": te.random_vectors(2, seed=11)}, None)
    with torch.inference_mode():
        plain = encoder(_ids(chunk), output_hidden_states=True).last_hidden_state
        with ti.vectors_inserted(encoder, key, [[(offset, embedding)]]):
            assert len(module._forward_hooks) == 1
            fixed = encoder(_ids(chunk), output_hidden_states=True).last_hidden_state
        after = encoder(_ids(chunk), output_hidden_states=True).last_hidden_state
    assert len(module._forward_hooks) == 0
    start = offset + 1      # BOS comes first
    assert torch.equal(fixed[:, :start], plain[:, :start])      # causal attention: earlier tokens unchanged
    assert not torch.allclose(fixed[:, start:start + 2], plain[:, start:start + 2])
    assert not torch.allclose(fixed[:, start + 2:], plain[:, start + 2:])
    assert torch.equal(after, plain)


def test_inserted_vectors_act_exactly_like_the_tokens_they_copy(encoders):
    encoder = encoders[0]
    words = tokenize("red fox")
    copied = ti.token_embedding_module(encoder).weight[words].detach().clone()
    embedding = ti.Embedding("fox", {"": copied}, None)
    chunk = tokenize("a") + [ti.PLACEHOLDER_ID] * 2 + tokenize("in snow")
    with torch.inference_mode():
        expected = encoder(_ids(tokenize("a red fox in snow"))).last_hidden_state
        with ti.vectors_inserted(encoder, "", [[(1, embedding)]]):
            got = encoder(_ids(chunk)).last_hidden_state
    torch.testing.assert_close(got, expected)


def test_vectors_inserted_cleans_up_on_errors_and_checks_rows(encoders):
    encoder = encoders[1]
    module = ti.token_embedding_module(encoder)
    embedding = make_embedding("x", count=1)
    with pytest.raises(RuntimeError, match="boom"), ti.vectors_inserted(encoder, "clip_g", [[(0, embedding)]]):
        raise RuntimeError("boom")
    assert len(module._forward_hooks) == 0
    with (pytest.raises(ValueError, match="rows of fixes"), torch.inference_mode(),
          ti.vectors_inserted(encoder, "clip_g", [[(0, embedding)], []])):
        encoder(_ids([1, 2]))
    wide = make_embedding("wide", width=48)
    with (pytest.raises(ValueError, match="width 32"), torch.inference_mode(),
          ti.vectors_inserted(encoder, "clip_g", [[(0, wide)]])):
        encoder(_ids([1, 2]))
    assert len(module._forward_hooks) == 0
    with ti.vectors_inserted(encoder, "clip_g", [[]]):     # nothing to insert: no hook at all
        assert len(module._forward_hooks) == 0


def test_encoder_widths_of_each_family(encoders):
    clip, with_projection = encoders
    assert ti.encoder_widths(SimpleNamespace(text_encoder=clip)) == {"": 32}
    assert ti.encoder_widths(SimpleNamespace(text_encoder=clip, text_encoder_2=with_projection)) == SDXL
    assert ti.encoder_widths(SimpleNamespace(text_encoder=None, text_encoder_2=with_projection)) == REFINER
