"""Interrogation (issue 22): POST /sdapi/v1/interrogate with "clip" (BLIP caption + CLIP ranking) and "deepdanbooru"
(tags), on tiny random models written where A1111 users keep theirs (models/BLIP, models/torch_deepdanbooru,
models/CLIP, interrogate/*.txt)."""
from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from modules import cmd_args
from modules import services as services_module
from modules.jobs import NotFound
from modules.options import Settings
from modules.postprocess.interrogate import blip, deepbooru
from modules.postprocess.interrogate.deepbooru_model import DeepDanbooruModel
from modules.postprocess.interrogate.interrogator import Interrogator
from tests.fixtures.app_client import app_client
from tests.fixtures.pictures import b64
from tests.fixtures.tiny_checkpoints import write_malicious_pickle
from tests.fixtures.tiny_interrogate import (WORDS, tiny_blip_config, write_bert_vocab, write_original_blip,
                                             write_tiny_blip_folder, write_tiny_clip_folder, write_tiny_deepbooru)

# logits → probabilities sigmoid(x): cat_ears .881, rating:safe .953, smile_(happy) .622, dog .269, solo .731
TAGS = {"cat_ears": 2.0, "rating:safe": 3.0, "smile_(happy)": 0.5, "dog": -1.0, "solo": 1.0}
PICTURE = b64(Image.new("RGB", (48, 40), (200, 30, 30)))


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    write_tiny_blip_folder(data / "models" / "BLIP" / "tiny-blip")
    write_tiny_deepbooru(data / "models" / "torch_deepdanbooru" / deepbooru.MODEL_FILE, TAGS)
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        client.services, client.data = services, data
        yield client
    services.shutdown()


def interrogate(api, model: str, image: str = PICTURE, **settings):
    if settings:
        api.services.options.update(settings)
    return api.post("/sdapi/v1/interrogate", json={"image": image, "model": model})


def test_deepbooru_tags_follow_a1111s_settings(api):
    answer = interrogate(api, "deepdanbooru", interrogate_deepbooru_score_threshold=0.5, deepbooru_sort_alpha=True,
                         deepbooru_use_spaces=True, deepbooru_escape=True, interrogate_return_ranks=False,
                         deepbooru_filter_tags="")
    assert answer.status_code == 200, answer.text
    # at or over 0.5, rating:* never, alphabetical, spaces, brackets escaped
    assert answer.json() == {"caption": r"cat ears, smile \(happy\), solo"}

    answer = interrogate(api, "deepdanbooru", interrogate_deepbooru_score_threshold=0.7, deepbooru_sort_alpha=False,
                         deepbooru_use_spaces=False, deepbooru_escape=False, interrogate_return_ranks=True,
                         deepbooru_filter_tags="cat ears")
    assert answer.json()["caption"] == "(solo:0.731)"
    answer = interrogate(api, "deepdanbooru", deepbooru_filter_tags="", interrogate_return_ranks=False)
    assert answer.json()["caption"] == "cat_ears, solo"     # by probability, highest first


def test_clip_caption_is_blips_deterministic_caption(api, caplog):
    first = interrogate(api, "clip", interrogate_clip_min_length=8, interrogate_clip_max_length=12)
    assert first.status_code == 200, first.text
    caption = first.json()["caption"]
    words = caption.split()
    assert words and set(words) <= set(WORDS) and len(words) <= 12
    assert interrogate(api, "clip").json()["caption"] == caption
    assert "BLIP caption alone" in caplog.text and "CLIP" in caplog.text


def test_clip_ranking_appends_each_categorys_best_matches(api, tmp_path):
    clip_folder = api.data / "models" / "CLIP" / "tiny-clip"
    lists = api.data / "interrogate"
    write_tiny_clip_folder(clip_folder)
    lists.mkdir()
    (lists / "mediums.txt").write_text("oil painting\nphoto\n")
    (lists / "flavors.top2.txt").write_text("red\nblue\ngreen\n")
    (lists / "artists.txt").write_text("monet\n")
    try:
        caption = interrogate(api, "clip", interrogate_return_ranks=False,
                              interrogate_clip_skip_categories=["artists"]).json()["caption"]
        blip_caption, *matches = caption.split(", ")
        assert blip_caption.split() and len(matches) == 3          # flavors: two, mediums: one, artists skipped
        assert set(matches[:2]) <= {"red", "blue", "green"} and matches[2] in {"oil painting", "photo"}
        ranked = interrogate(api, "clip", interrogate_return_ranks=True).json()["caption"]
        assert ranked.startswith(blip_caption + ", (") and ranked.count(":") == 3
    finally:
        shutil.rmtree(clip_folder)
        shutil.rmtree(lists)


def test_bad_requests_name_the_field(api):
    assert interrogate(api, "clip", image="").status_code == 404          # A1111's "Image not found"
    answer = interrogate(api, "wd14")
    assert answer.status_code == 422 and "model" in answer.text and "deepdanbooru" in answer.text
    answer = interrogate(api, "clip", image="bm90IGFuIGltYWdl")
    assert answer.status_code == 422 and "image" in answer.text


def test_missing_weights_are_named(tmp_path):
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(tmp_path), "--nowebui"]))
    from webui import create_app

    try:
        with app_client(create_app(services)) as client:
            for model, named in (("deepdanbooru", "model-resnet_custom_v3.pt"),
                                 ("clip", "model_base_caption_capfilt_large.pth")):
                answer = client.post("/sdapi/v1/interrogate", json={"image": PICTURE, "model": model})
                assert answer.status_code == 404 and named in answer.json()["detail"]
    finally:
        services.shutdown()


def test_salesforce_blip_file_captions_as_its_hugging_face_folder(tmp_path, monkeypatch):
    folder = write_tiny_blip_folder(tmp_path / "hf")
    original = write_original_blip(tmp_path / "BLIP" / blip.ORIGINAL_FILE, folder)
    config = tmp_path / "tiny.json"
    config.write_text(tiny_blip_config().to_json_string())
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(NotFound, match="bert-base-uncased"):
        blip.BlipCaptioner.load(original, torch.device("cpu"), torch.float32, original_config=config)
    write_bert_vocab(tmp_path / "BLIP" / "bert-base-uncased")
    image, settings = Image.new("RGB", (40, 30), (20, 90, 200)), Settings({})
    from_file = blip.BlipCaptioner.load(original, torch.device("cpu"), torch.float32, original_config=config)
    from_folder = blip.BlipCaptioner.load(folder, torch.device("cpu"), torch.float32)
    assert from_file.caption(image, settings) == from_folder.caption(image, settings)


def test_bundled_config_takes_salesforces_vit_names():
    """Every Salesforce ViT-B/16 key of model_base_caption_capfilt_large.pth lands on one of the bundled model's."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    with torch.device("meta"):
        model = BlipForConditionalGeneration(BlipConfig.from_json_file(blip.BUNDLED_CONFIG))
    expected = {key for key in model.state_dict() if key.startswith("vision_model.")}
    salesforce = ["visual_encoder.cls_token", "visual_encoder.pos_embed", "visual_encoder.patch_embed.proj.weight",
                  "visual_encoder.patch_embed.proj.bias", "visual_encoder.norm.weight", "visual_encoder.norm.bias"]
    salesforce += [f"visual_encoder.blocks.{i}.{part}.{kind}" for i in range(12) for kind in ("weight", "bias")
                   for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")]
    assert {blip.hf_key(key) for key in salesforce} == expected
    assert model.state_dict()["vision_model.embeddings.position_embedding"].shape == (1, 577, 768)
    assert model.config.text_config.vocab_size == 30524 and model.config.text_config.bos_token_id == 30522


def test_deepbooru_model_has_a1111s_layer_names_and_shapes():
    with torch.device("meta"):
        state = DeepDanbooruModel().state_dict()
    assert len([key for key in state if key.endswith(".weight")]) == 179 and "n_Conv_178.bias" not in state
    # spot checks against A1111's deepbooru_model.py
    assert state["n_Conv_0.weight"].shape == (64, 3, 7, 7)
    assert state["n_Conv_98.weight"].shape == (256, 256, 3, 3)        # the mid-stage downsampling block
    assert state["n_Conv_100.weight"].shape == (1024, 1024, 1, 1)     # …its projection, numbered after it
    assert state["n_Conv_168.weight"].shape == (4096, 2048, 1, 1)
    assert state["n_Conv_178.weight"].shape == (9176, 4096, 1, 1)


def test_malicious_deepbooru_file_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "models" / "torch_deepdanbooru").mkdir(parents=True)
    write_malicious_pickle(tmp_path / "models" / "torch_deepdanbooru" / "evil.pt", marker)
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(tmp_path), "--nowebui"]))
    from webui import create_app

    try:
        with app_client(create_app(services)) as client:
            answer = client.post("/sdapi/v1/interrogate", json={"image": PICTURE, "model": "deepdanbooru"})
            assert answer.status_code == 422 and "evil.pt" in answer.json()["detail"]
            assert "refused" in answer.json()["detail"]
    finally:
        services.shutdown()
    assert not marker.exists()


def test_batch_interrogate_appends_a_caption_file_per_image(api, tmp_path):
    from modules.training.captioning import caption_folder, training_caption

    interrogator = Interrogator(api.data / "models", api.data, torch.device("cpu"), torch.float32)
    settings = Settings({"interrogate_deepbooru_score_threshold": 0.7})
    source = tmp_path / "pictures"
    source.mkdir()
    Image.new("RGB", (20, 20), (0, 0, 255)).save(source / "one.png")
    Image.new("RGB", (30, 20), (0, 255, 0)).save(source / "two.jpg")
    (source / "broken.png").write_bytes(b"not a png")
    (source / "notes.md").write_text("not an image")
    for _ in range(2):
        result = caption_folder(interrogator, "deepdanbooru", source, tmp_path / "captions", settings)
    assert sorted(path.name for path in result.written) == ["one.txt", "two.txt"]
    assert result.skipped and result.skipped[0].startswith("broken.png")
    assert (tmp_path / "captions" / "one.txt").read_text() == "cat ears, solo\ncat ears, solo\n"
    assert not list(source.glob("*.txt"))

    short = Settings({"interrogate_clip_min_length": 4, "interrogate_clip_max_length": 10,
                      "interrogate_deepbooru_score_threshold": 0.7})
    caption_folder(interrogator, "clip", source, None, short)
    blip_caption = (source / "two.txt").read_text().strip()
    assert blip_caption and set(blip_caption.split()) <= set(WORDS)
    picture = Image.open(source / "two.jpg")
    assert training_caption(interrogator, picture, ["BLIP", "Deepbooru"], short) == f"{blip_caption}, cat ears, solo"


def test_img2img_interrogate_buttons_put_the_text_in_the_prompt(api):
    """A1111's 📎 / 📦 on the img2img tab: the selected sub-tab's picture → the prompt box."""
    import asyncio
    import warnings

    import gradio as gr
    from PIL import Image

    from modules.ui import create_ui
    from modules.ui.img2img_inputs import IMAGE_KEYS

    demo = create_ui(api.services)
    config = demo.get_config_file()
    ids = {component["props"].get("elem_id"): component["id"] for component in config["components"]}
    picture = Image.new("RGB", (64, 64), (200, 40, 40))
    values = [picture if key == "init_img" else None for key in IMAGE_KEYS] + ["img2img"]
    api.services.options.update({"interrogate_deepbooru_score_threshold": 0.0, "interrogate_return_ranks": False})
    for elem_id in ("interrogate", "deepbooru"):
        dependency = next(dep for dep in config["dependencies"] if [ids[elem_id], "click"] in map(list, dep["targets"]))
        assert dependency["outputs"] == [ids["img2img_prompt"]]
        text = asyncio.run(demo.fns[dependency["id"]].fn(*values))
        assert isinstance(text, str) and text, elem_id
    # no picture in the selected sub-tab: a warning, the prompt stays
    empty = [None] * len(IMAGE_KEYS) + ["inpaint"]
    dependency = next(dep for dep in config["dependencies"] if [ids["deepbooru"], "click"] in map(list, dep["targets"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # gr.Warning outside a request
        assert asyncio.run(demo.fns[dependency["id"]].fn(*empty)) == gr.skip()


def test_prepare_captions_each_output_image(api, tmp_path):
    """Train → Prepare with Caption, the existing caption prepended: it, then BLIP's caption, then DeepBooru's
    tags (A1111's order)."""
    from PIL import Image

    from modules.training.preprocess import PreprocessRequest

    source = tmp_path / "photos"
    source.mkdir()
    Image.new("RGB", (80, 64), (30, 200, 90)).save(source / "leaf.png")
    (source / "leaf.txt").write_text("my leaf")
    api.services.options.update({"interrogate_deepbooru_score_threshold": 0.7, "deepbooru_use_spaces": True})
    request = PreprocessRequest(source_folder=str(source), destination_folder=str(tmp_path / "out"), width=64,
                                height=64, captioners=["Deepbooru", "BLIP"], existing_caption="prepend")
    job = api.services.submit_preprocess(request)
    assert job.done.wait(120) and job.state == "done", job.error
    caption = (tmp_path / "out" / "00000-0-leaf.txt").read_text()
    assert caption.startswith("my leaf ") and caption.endswith(", cat ears, solo"), caption


def test_a1111_names_for_extensions_interrogate_through_the_server(api):
    """`modules.deepbooru.model.tag`, `tag_multi(force_disable_ranks=True)` and `shared.interrogator.interrogate`, as
    extensions (dataset tag editors, taggers) call them — from a request thread and from inside a job alike."""
    from PIL import Image

    from modules import deepbooru, shared

    shared.bind(api.services)   # A1111's module globals follow this server (another test's may have bound theirs)
    picture = Image.new("RGB", (64, 64), (200, 40, 40))
    api.services.options.update({"interrogate_deepbooru_score_threshold": 0.0, "interrogate_return_ranks": True})
    ranked = deepbooru.model.tag(picture)
    assert ranked and ":" in ranked.split(", ")[0]   # "(tag:0.512)" with ranks
    plain = deepbooru.model.tag_multi(picture, force_disable_ranks=True)
    assert plain and ":" not in plain
    caption = shared.interrogator.interrogate(picture)
    assert isinstance(caption, str) and caption
    # a script's hook runs on the worker: the call runs there at once instead of waiting behind itself
    job = api.services.queue.submit("script hook", lambda job: deepbooru.model.tag_multi(picture, True))
    assert job.done.wait(60) and job.state == "done" and job.result == plain
    api.services.options.update({"interrogate_return_ranks": False})
