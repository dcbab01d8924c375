"""Interrogate CLIP on OpenAI's CLIP file, the `ViT-L-14.pt` A1111 users have (issue 22): a TorchScript archive read
weights-only (nothing in it run), converted to transformers' CLIPModel; on a tiny OpenAI-layout CLIP written with
open_clip and saved as TorchScript, as OpenAI saved theirs."""
from __future__ import annotations

import pickle
import shutil
import struct
import zipfile

import pytest
import torch
from PIL import Image

from modules import cmd_args
from modules import services as services_module
from modules.jobs import JobError
from modules.models.files import ModelFileError
from modules.models.torchscript_weights import read_state_dict
from modules.options import Settings
from modules.postprocess.interrogate import clip_ranking, openai_clip
from modules.postprocess.interrogate.interrogator import Interrogator
from tests.fixtures.app_client import app_client
from tests.fixtures.pictures import b64
from tests.fixtures.tiny_interrogate import (tiny_open_clip, write_openai_clip, write_tiny_blip_folder,
                                             write_tiny_clip_folder)

TEXTS = ["a red cat", "a blue dog sitting on the grass", "oil painting", "photo"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def openai_file(tmp_path_factory):
    model = tiny_open_clip()
    path = write_openai_clip(tmp_path_factory.mktemp("clip") / openai_clip.PREFERRED_FILE, model)
    return model, path


def picture() -> Image.Image:
    pixels = torch.Generator().manual_seed(3)
    return Image.fromarray((torch.rand(40, 48, 3, generator=pixels) * 255).byte().numpy())


def open_clip_image_features(model, image: Image.Image) -> torch.Tensor:
    """OpenAI's preprocessing (open_clip's copy of clip.load's) and image tower, normalised as A1111 does."""
    import open_clip

    preprocess = open_clip.transform.image_transform(32, is_train=False)
    with torch.no_grad():
        features = model.encode_image(preprocess(image).unsqueeze(0))
    return features / features.norm(dim=-1, keepdim=True)


def open_clip_probabilities(model, image: Image.Image, texts: list[str]) -> torch.Tensor:
    """OpenAI's own ranking, as A1111's interrogate.rank computes it, on open_clip's model and preprocessing."""
    import open_clip

    with torch.no_grad():
        text_features = model.encode_text(open_clip.tokenize(texts))
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return (100.0 * open_clip_image_features(model, image) @ text_features.T).softmax(dim=-1).mean(dim=0)


def test_reader_names_each_tensor_as_the_models_state_dict(openai_file):
    model, path = openai_file
    state = read_state_dict(path)
    expected = model.state_dict()
    # scripting makes open_clip's non-persistent attn_mask a buffer: torch.jit.load's state_dict lists it too
    assert set(state) - set(expected) == {"attn_mask"} and set(expected) <= set(state)
    for key, tensor in expected.items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key
    assert "visual.transformer.resblocks.1.attn.in_proj_weight" in state and "text_projection" in state
    loaded = torch.jit.load(str(path)).state_dict()   # our own file: running it is safe here
    assert list(state) == list(loaded) and all(torch.equal(state[key], loaded[key]) for key in loaded)


def test_converted_model_gives_open_clips_features(openai_file):
    import open_clip

    model, path = openai_file
    converted = openai_clip.load_model(path)
    config = converted.config
    assert (config.vision_config.image_size, config.vision_config.patch_size, config.vision_config.num_hidden_layers,
            config.text_config.num_hidden_layers, config.projection_dim) == (32, 16, 2, 2, 32)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.tokenize(TEXTS)
    with torch.no_grad():
        image = clip_ranking.ClipRanker._features(converted.get_image_features(pixel_values=pixels))
        text = clip_ranking.ClipRanker._features(converted.get_text_features(input_ids=tokens))
        assert torch.allclose(image, model.encode_image(pixels), atol=1e-5)
        assert torch.allclose(text, model.encode_text(tokens), atol=1e-5)
    assert torch.allclose(converted.logit_scale, model.logit_scale)


def test_ranker_on_the_file_ranks_as_openai_clip(openai_file):
    """The ranker's tokenizer (SD's CLIP BPE) and preprocessing give OpenAI's percentages for the same picture."""
    model, path = openai_file
    import open_clip

    ranker = clip_ranking.ClipRanker.load(path, CPU, torch.float32)
    image = picture()
    assert torch.allclose(ranker.image_features(image), open_clip_image_features(model, image), atol=1e-4)
    tokens = ranker.tokenizer(TEXTS, padding="max_length", max_length=77, return_tensors="pt")
    openai_tokens = open_clip.tokenize(TEXTS)
    assert torch.equal(tokens.input_ids[tokens.attention_mask.bool()], openai_tokens[openai_tokens != 0])
    ranked = ranker.rank(ranker.image_features(image), TEXTS, top=len(TEXTS))
    expected = open_clip_probabilities(model, image, TEXTS) * 100
    assert [text for text, _ in ranked] == [TEXTS[i] for i in expected.argsort(descending=True)]
    assert torch.allclose(torch.tensor([score for _, score in ranked]), expected.sort(descending=True).values,
                          atol=1e-3)


@pytest.fixture(scope="module")
def api(tmp_path_factory, openai_file):
    data = tmp_path_factory.mktemp("data")
    write_tiny_blip_folder(data / "models" / "BLIP" / "tiny-blip")
    (data / "models" / "CLIP").mkdir(parents=True)
    shutil.copy(openai_file[1], data / "models" / "CLIP" / openai_clip.PREFERRED_FILE)
    lists = data / "interrogate"
    lists.mkdir()
    (lists / "flavors.top2.txt").write_text("a red cat\na blue dog sitting on the grass\nphoto\n")
    (lists / "mediums.txt").write_text("oil painting\nwatercolor\n")
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--nowebui"]))
    from webui import create_app

    with app_client(create_app(services)) as client:
        client.services, client.data = services, data
        yield client
    services.shutdown()


def test_interrogate_clip_appends_openai_clips_matches(api, openai_file):
    api.services.options.update({"interrogate_return_ranks": False, "interrogate_clip_skip_categories": []})
    answer = api.post("/sdapi/v1/interrogate", json={"image": b64(picture()), "model": "clip"})
    assert answer.status_code == 200, answer.text
    blip_caption, *matches = answer.json()["caption"].split(", ")
    flavors = ["a red cat", "a blue dog sitting on the grass", "photo"]
    mediums = ["oil painting", "watercolor"]
    # the lists in file-name order (flavors, then mediums), each one's best matches by OpenAI CLIP's own ranking
    best_flavors = open_clip_probabilities(openai_file[0], picture(), flavors).argsort(descending=True)[:2]
    best_medium = open_clip_probabilities(openai_file[0], picture(), mediums).argmax()
    assert blip_caption and matches == [flavors[i] for i in best_flavors] + [mediums[best_medium]]


def test_openai_file_is_preferred_and_clip_models_path_searched_first(tmp_path, openai_file):
    models = tmp_path / "models" / "CLIP"
    write_tiny_clip_folder(models / "clip-vit-hf")
    assert clip_ranking.find_clip_model([models]) == models / "clip-vit-hf"    # a Hugging Face folder still works
    shutil.copy(openai_file[1], models / "ViT-B-32.pt")
    shutil.copy(openai_file[1], models / openai_clip.PREFERRED_FILE)
    assert clip_ranking.find_clip_model([models]) == models / openai_clip.PREFERRED_FILE
    (models / openai_clip.PREFERRED_FILE).unlink()
    shutil.rmtree(models / "clip-vit-hf")
    assert clip_ranking.find_clip_model([models]) == models / "ViT-B-32.pt"
    flag_folder = tmp_path / "a1111-clip"
    flag_folder.mkdir()
    shutil.copy(openai_file[1], flag_folder / openai_clip.PREFERRED_FILE)
    interrogator = Interrogator(tmp_path / "models", tmp_path, CPU, torch.float32, clip_models_path=flag_folder)
    assert clip_ranking.find_clip_model(interrogator.clip_folders) == flag_folder / openai_clip.PREFERRED_FILE
    # the flag reaches the server's interrogator
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(tmp_path), "--nowebui",
                                                           "--clip-models-path", str(flag_folder)]))
    try:
        assert clip_ranking.find_clip_model(services.interrogator.clip_folders) == \
            flag_folder / openai_clip.PREFERRED_FILE
    finally:
        services.shutdown()


def test_without_a_clip_model_the_log_names_both_layouts(tmp_path, caplog):
    write_tiny_blip_folder(tmp_path / "models" / "BLIP" / "tiny-blip")
    (tmp_path / "interrogate").mkdir()
    (tmp_path / "interrogate" / "mediums.txt").write_text("photo\n")
    interrogator = Interrogator(tmp_path / "models", tmp_path, CPU, torch.float32)
    caption = interrogator.interrogate(picture(), "clip", Settings({"interrogate_clip_min_length": 4, "interrogate_clip_max_length": 8}))
    assert caption and "photo" not in caption
    assert openai_clip.PREFERRED_FILE in caplog.text and "Hugging Face-layout CLIP folder" in caplog.text


def torchscript_with_payload(path, module: str, name: str, argument: str):
    """A zip laid out as a TorchScript archive whose data.pkl calls module.name(argument) when unpickled."""
    text = argument.encode()
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(text)) + text + b"\x85R."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", payload)
        archive.writestr("evil/code/__torch__/model.py", "class CLIP(Module):\n  __parameters__ = []\n")
        archive.writestr("evil/version", "3\n")
    return payload


@pytest.mark.parametrize("module, name, command", [
    ("os", "system", "touch {marker}"),
    ("builtins", "exec", "open({marker!r}, 'w').close()"),
])
def test_archive_naming_code_is_refused_and_nothing_runs(tmp_path, module, name, command):
    marker = tmp_path / "pwned"
    path = tmp_path / openai_clip.PREFERRED_FILE
    payload = torchscript_with_payload(path, module, name, command.format(marker=str(marker)))
    pickle.loads(payload)   # the payload is live: a plain unpickler runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelFileError, match=rf"{path.name}: refused.*{module}\.{name}"):
        read_state_dict(path)
    with pytest.raises(JobError, match="refused"):
        clip_ranking.ClipRanker.load(path, CPU, torch.float32)
    assert not marker.exists()


def test_api_refuses_a_malicious_clip_file_by_name(api):
    marker = api.data / "pwned"
    path = api.data / "models" / "CLIP" / openai_clip.PREFERRED_FILE
    original = path.read_bytes()
    try:
        torchscript_with_payload(path, "builtins", "exec", f"open({str(marker)!r}, 'w').close()")
        answer = api.post("/sdapi/v1/interrogate", json={"image": b64(picture()), "model": "clip"})
        assert answer.status_code == 422 and openai_clip.PREFERRED_FILE in answer.json()["detail"]
        assert "refused" in answer.json()["detail"] and "builtins.exec" in answer.json()["detail"]
    finally:
        path.write_bytes(original)
    assert not marker.exists()


class _HugeView:
    """Pickles as torch's tensor record: a stride-0 view of 10¹² elements over a one-float storage."""

    def __reduce__(self):
        import collections

        return torch._utils._rebuild_tensor_v2, (_STORAGE, 0, (10**6, 10**6), (0, 0), False, collections.OrderedDict())


_STORAGE = object()


class _ArchivePickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", torch.FloatStorage, "0", "cpu", 1) if obj is _STORAGE else None


def test_tensor_larger_than_its_storage_is_refused(tmp_path):
    import io

    data = io.BytesIO()
    _ArchivePickler(data, protocol=2).dump({"weight": _HugeView()})
    path = tmp_path / "huge.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("huge/data.pkl", data.getvalue())
        archive.writestr("huge/data/0", struct.pack("<f", 1.0))
        archive.writestr("huge/code/__torch__/model.py", "class M(Module):\n  __parameters__ = []\n")
    with pytest.raises(ModelFileError, match="huge.pt: refused.*larger than its storage"):
        read_state_dict(path)


def test_torchscript_file_of_another_model_is_named(tmp_path):
    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(path))
    assert set(read_state_dict(path)) == {"weight", "bias"}
    with pytest.raises(JobError, match="linear.pt: not an OpenAI ViT CLIP"):
        openai_clip.load_model(path)
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(JobError, match="broken.pt"):
        openai_clip.load_model(tmp_path / "broken.pt")
