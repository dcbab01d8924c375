"""Loading original single-file checkpoints: family detection, offline building, safe reading."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modules.models import detect, families, files, loader
from tests.fixtures.tiny_checkpoints import (
    FAMILIES,
    build_tiny_model,
    mark_as_v_prediction_sd2,
    write_ckpt,
    write_malicious_pickle,
    write_safetensors,
    write_sidecar_yaml,
)

EXPECTED = {
    "sd1": ("sd1", False), "sd1_inpaint": ("sd1", True), "sd2": ("sd2", False), "sd2_inpaint": ("sd2", True),
    "sdxl": ("sdxl", False), "sdxl_refiner": ("sdxl_refiner", False), "sdxl_inpaint": ("sdxl", True),
}


@pytest.fixture(scope="module")
def tiny_models():
    return {family: build_tiny_model(family) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_detected_from_keys(tiny_models, family):
    spec = detect.detect(tiny_models[family].state_dict)
    assert (spec.family.id, spec.inpainting) == EXPECTED[family]
    assert spec.prediction_type == "epsilon"


def _same_weights(loaded: torch.nn.Module, reference: torch.nn.Module) -> list[str]:
    ours, theirs = loaded.state_dict(), reference.state_dict()
    return [k for k in theirs if k not in ours or not torch.equal(ours[k], theirs[k])]


@pytest.mark.parametrize("family", FAMILIES)
def test_components_rebuilt_exactly_from_file(tiny_models, tmp_path, family):
    """Every weight of UNet, VAE and text encoders comes back bit-identical from the original-layout file."""
    model = tiny_models[family]
    path = write_safetensors(model, tmp_path / f"{family}.safetensors")
    state_dict = files.load_state_dict(path)
    spec = detect.detect(state_dict)
    components = loader.build_components(state_dict, spec, torch.float32, torch.float32)
    assert _same_weights(components.unet, model.unet) == []
    assert _same_weights(components.vae, model.vae) == []
    for ours, reference in ((components.text_encoder, model.text_encoder),
                            (components.text_encoder_2, model.text_encoder_2)):
        assert (ours is None) == (reference is None)
        if reference is not None:
            assert _same_weights(ours, reference) == []


@pytest.mark.parametrize("family, keys", [
    ("sd1", {families.SD1.text_encoder.token_embedding: (49408, 768),
             "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}),
    ("sd2", {families.SD2.text_encoder.token_embedding: (49408, 1024),
             "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)}),
    ("sdxl", {families.SDXL.text_encoder.token_embedding: (49408, 768),
              families.SDXL.text_encoder_2.token_embedding: (49408, 1280), "label_emb.0.0.weight": (1280, 2816),
              "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048)}),
    ("sdxl_refiner", {families.SDXL_REFINER.text_encoder_2.token_embedding: (49408, 1280),
                      "label_emb.0.0.weight": (1536, 2560),
                      "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (768, 1280)}),
])
def test_real_widths_recognised_too(family, keys):
    """Full-size shapes (768 / 1024 / 2048 / 1280-wide context) go through the same key-based detection."""
    state_dict = {detect.UNET + "input_blocks.0.0.weight": torch.empty(320, 4, 3, 3)}
    for key, shape in keys.items():
        name = key if key.startswith(("cond_stage_model", "conditioner")) else detect.UNET + key
        state_dict[name] = torch.empty(shape)
    assert detect.detect(state_dict).family is families.by_id(family)


def test_inconsistent_widths_are_refused(tiny_models):
    state_dict = dict(tiny_models["sd1"].state_dict)
    state_dict[families.SD1.text_encoder.token_embedding] = torch.zeros(49408, 48)
    with pytest.raises(detect.UnsupportedModelError, match="text features"):
        detect.detect(state_dict)


@pytest.mark.parametrize("keys, message", [
    ({"control_model.time_embed.0.weight": torch.zeros(1)}, "ControlNet"),
    ({"lora_unet_down_blocks_0.lora_up.weight": torch.zeros(1)}, "LoRA"),
    ({"something.else": torch.zeros(1)}, "no Stable Diffusion UNet"),
])
def test_other_model_kinds_get_a_clear_error(keys, message):
    with pytest.raises(detect.UnsupportedModelError, match=message):
        detect.detect(keys)


class TestPredictionType:
    def test_sd2_heuristic_reads_v_models(self, tiny_models):
        state_dict = dict(tiny_models["sd2"].state_dict)
        mark_as_v_prediction_sd2(state_dict)
        spec = detect.detect(state_dict)
        assert (spec.prediction_type, spec.prediction_source) == ("v_prediction", "heuristic")
        assert spec.config_variant == "sd2_768_v"
        assert loader.scheduler_config(spec)["prediction_type"] == "v_prediction"

    def test_sidecar_yaml_wins_over_heuristic(self, tiny_models, tmp_path):
        checkpoint = write_safetensors(tiny_models["sd2"], tmp_path / "model.safetensors")
        write_sidecar_yaml(checkpoint, v_prediction=True)
        spec = detect.detect(tiny_models["sd2"].state_dict, sidecar_yaml=checkpoint.with_suffix(".yaml"))
        assert (spec.prediction_type, spec.prediction_source) == ("v_prediction", "yaml")
        write_sidecar_yaml(checkpoint, v_prediction=False)
        marked = dict(tiny_models["sd2"].state_dict)
        mark_as_v_prediction_sd2(marked)
        spec = detect.detect(marked, sidecar_yaml=checkpoint.with_suffix(".yaml"))
        assert (spec.prediction_type, spec.prediction_source) == ("epsilon", "yaml")

    def test_v_pred_key_marks_sdxl_v_models(self, tiny_models):
        state_dict = dict(tiny_models["sdxl"].state_dict, v_pred=torch.tensor([]))
        assert detect.detect(state_dict).prediction_type == "v_prediction"

    def test_user_override_wins(self, tiny_models):
        spec = detect.detect(tiny_models["sd1"].state_dict, override="v_prediction")
        assert (spec.prediction_type, spec.prediction_source) == ("v_prediction", "override")


class TestSafeReading:
    def test_malicious_pickle_refused_and_never_run(self, tmp_path):
        marker = tmp_path / "pwned"
        path = write_malicious_pickle(tmp_path / "evil.ckpt", marker)
        with pytest.raises(files.ModelFileError, match="evil.ckpt"):
            files.load_state_dict(path)
        assert not marker.exists()

    def test_refused_even_when_torch_is_told_to_allow_pickles(self, tmp_path):
        """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD must not matter: weights_only=True is passed explicitly."""
        marker = tmp_path / "pwned"
        path = write_malicious_pickle(tmp_path / "evil.ckpt", marker)
        code = ("import sys; sys.path.insert(0, '.'); from modules.models import files\n"
                f"try:\n    files.load_state_dict({str(path)!r})\nexcept files.ModelFileError as e:\n    print('refused', e)")
        env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                             timeout=120)
        assert "refused" in out.stdout, out.stderr
        assert not marker.exists()

    def test_monkey_patched_torch_load_is_not_used(self, tmp_path, monkeypatch):
        marker = tmp_path / "pwned"
        path = write_malicious_pickle(tmp_path / "evil.ckpt", marker)
        real = torch.load
        monkeypatch.setattr(torch, "load", lambda *a, **k: real(*a, **{**k, "weights_only": False}))
        with pytest.raises(files.ModelFileError):
            files.load_state_dict(path)
        assert not marker.exists()

    @pytest.mark.parametrize("name", ["x.safetensors", "x.SAFETENSORS", "x.SafeTensors"])
    def test_pickle_renamed_safetensors_detected_by_content(self, tmp_path, name):
        marker = tmp_path / "pwned"
        path = write_malicious_pickle(tmp_path / name, marker)
        assert files.file_kind(path) == "pickle"
        with pytest.raises(files.ModelFileError):
            files.load_state_dict(path)
        assert not marker.exists()

    def test_old_lightning_ckpt_loads_through_allowlist(self, tiny_models, tmp_path):
        path = write_ckpt(tiny_models["sd1"], tmp_path / "old.ckpt", lightning_extras=True)
        state_dict = files.load_state_dict(path)
        assert detect.detect(state_dict).family is families.SD1
        key = detect.UNET + "input_blocks.0.0.weight"
        assert torch.equal(state_dict[key], tiny_models["sd1"].state_dict[key])

    @pytest.mark.parametrize("content, reason", [
        (b"", "empty"),
        (struct.pack("<Q", 2**40) + b"{", "over the 100 MB limit"),
        (struct.pack("<Q", 100_000_001) + b"{", "over the 100 MB limit"),
        (struct.pack("<Q", 5000) + b'{"a": 1}', "past the end"),
        (struct.pack("<Q", 4) + b"{\xff\xfe}", "not valid JSON"),
        (struct.pack("<Q", 8) + b'[1, 2] ', "not a safetensors"),  # a JSON-list header
        (struct.pack("<Q", 2) + b"[]", "not a safetensors"),
        (b"hello world, not a model", "not a safetensors"),
    ])
    def test_damaged_safetensors_named_in_error(self, tmp_path, content, reason):
        path = tmp_path / "broken.safetensors"
        path.write_bytes(content)
        with pytest.raises(files.ModelFileError, match=reason) as error:
            files.load_state_dict(path)
        assert "broken.safetensors" in str(error.value)

    def test_truncated_and_inconsistent_data(self, tiny_models, tmp_path):
        good = write_safetensors(tiny_models["sd1"], tmp_path / "good.safetensors")
        data = good.read_bytes()
        truncated = tmp_path / "truncated.safetensors"
        truncated.write_bytes(data[: len(data) // 2])
        with pytest.raises(files.ModelFileError, match="truncated.safetensors"):
            files.load_state_dict(truncated)
