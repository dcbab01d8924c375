"""The tiny checkpoint fixtures really are laid out like original SD files.

The decisive check is the round trip through diffusers' own single-file converters:
if they turn our files back into exactly the reference modules' weights, the files
have the layout real loaders read.
"""
import io
import pickletools
import subprocess
import sys
import zipfile

import pytest
import safetensors.torch
import torch
import yaml
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)

from tests.fixtures import tiny_checkpoints as tc

UNET = "model.diffusion_model."

SIGNATURE_KEYS = {
    "sd1": ["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            "cond_stage_model.transformer.text_model.embeddings.position_ids",
            "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.bias",
            UNET + "input_blocks.1.1.proj_in.weight"],
    "sd2": ["cond_stage_model.model.token_embedding.weight", "cond_stage_model.model.positional_embedding",
            "cond_stage_model.model.transformer.resblocks.2.mlp.c_proj.bias",  # the extra, unused block
            "cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale",
            UNET + "output_blocks.3.1.transformer_blocks.0.norm1.bias"],
    "sdxl": [UNET + "label_emb.0.0.weight", UNET + "label_emb.0.2.weight",
             UNET + "input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight",  # depth 2 at level 1
             UNET + "middle_block.1.transformer_blocks.1.norm3.weight",  # mid depth = last level's
             "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
             "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
             "conditioner.embedders.1.model.transformer.resblocks.1.mlp.c_proj.bias",
             "conditioner.embedders.1.model.text_projection", "conditioner.embedders.1.model.logit_scale"],
    "sdxl_refiner": [UNET + "label_emb.0.0.weight", "conditioner.embedders.0.model.text_projection",
                     "conditioner.embedders.0.model.transformer.resblocks.1.attn.in_proj_weight"],
}
COMMON_KEYS = [UNET + "input_blocks.0.0.weight", UNET + "time_embed.0.weight", UNET + "out.2.weight",
               UNET + "middle_block.2.emb_layers.1.weight", UNET + "output_blocks.0.0.skip_connection.weight",
               "first_stage_model.encoder.mid.attn_1.q.weight", "first_stage_model.decoder.mid.attn_1.proj_out.weight",
               "first_stage_model.encoder.down.0.downsample.conv.weight",
               "first_stage_model.decoder.up.3.upsample.conv.weight",
               "first_stage_model.decoder.up.0.block.1.conv2.weight",  # decoder: layers_per_block + 1
               "first_stage_model.quant_conv.weight", "first_stage_model.post_quant_conv.weight"]


@pytest.fixture(scope="module")
def models():
    return {f: tc.build_tiny_model(f) for f in tc.FAMILIES}


@pytest.fixture(scope="module")
def files(models, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return {f: tc.write_safetensors(m, d / f"{f}.safetensors") for f, m in models.items()}


def _assert_same(converted: dict, reference: dict, what: str):
    assert set(converted) == set(reference), f"{what}: key mismatch"
    bad = [k for k in reference if not torch.equal(converted[k], reference[k])]
    assert not bad, f"{what}: values differ for {bad[:5]}"


def _flat(model, sd):
    # transformers >= 5.6: CLIPTextModel has no `text_model` attribute and no `text_model.` key prefix.
    return sd if hasattr(model, "text_model") else {k.removeprefix("text_model."): v for k, v in sd.items()}


@pytest.mark.parametrize("family", tc.FAMILIES)
def test_file_layout(files, family):
    sd = safetensors.torch.load_file(files[family])
    base = family.removesuffix("_inpaint")
    assert all(k.startswith(tc.FILE_PREFIXES[family]) for k in sd), "key outside the family's prefixes"
    for prefix in tc.FILE_PREFIXES[family]:
        assert any(k.startswith(prefix) for k in sd)
    assert not [k for k in COMMON_KEYS + SIGNATURE_KEYS[base] if k not in sd]
    assert sd[UNET + "input_blocks.0.0.weight"].shape[1] == (9 if family.endswith("_inpaint") else 4)
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in sd  # decoder levels are reversed
    assert sd["first_stage_model.encoder.mid.attn_1.k.weight"].ndim == 4  # 1x1 conv, as in real files
    assert all(v.dtype == (torch.int64 if k.endswith("position_ids") else torch.float32) for k, v in sd.items())
    if base == "sd1":
        assert sd[UNET + "input_blocks.1.1.proj_in.weight"].ndim == 4
        assert torch.equal(sd["cond_stage_model.transformer.text_model.embeddings.position_ids"],
                           torch.arange(77)[None])
    if base == "sd2":
        assert sd[UNET + "input_blocks.1.1.proj_in.weight"].ndim == 2
        assert "cond_stage_model.model.transformer.resblocks.3.ln_1.weight" not in sd
    if base in ("sdxl", "sdxl_refiner"):
        in_features = 80 if base == "sdxl" else 72
        assert sd[UNET + "label_emb.0.0.weight"].shape[1] == in_features
        ctx = 64 if base == "sdxl" else 32
        assert sd[UNET + "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"].shape == (64, ctx)
        assert not any(k.startswith("first_stage_model.") and "attn_1" in k and "up." in k for k in sd)
    if base == "sdxl_refiner":
        assert not any(k.startswith(("conditioner.embedders.1.", "conditioner.embedders.0.transformer.")) for k in sd)


@pytest.mark.parametrize("family", tc.FAMILIES)
def test_round_trip_through_diffusers_converters(models, files, family):
    m = models[family]
    sd = safetensors.torch.load_file(files[family])
    base = family.removesuffix("_inpaint")

    _assert_same(convert_ldm_unet_checkpoint(sd, dict(m.unet.config)), m.unet.state_dict(), "unet")
    _assert_same(convert_ldm_vae_checkpoint(sd, dict(m.vae.config)), m.vae.state_dict(), "vae")

    if base in ("sd1", "sdxl"):  # OpenAI CLIP-L, stored as the HF module
        conv = _flat(m.text_encoder, convert_ldm_clip_checkpoint(sd))
        pos_ids = conv.pop("embeddings.position_ids")  # non-persistent buffer in transformers 5
        assert torch.equal(pos_ids, torch.arange(77)[None])
        _assert_same(conv, m.text_encoder.state_dict(), "clip-l")
    if base == "sd2":
        conv = _flat(m.text_encoder, convert_open_clip_checkpoint(m.text_encoder, sd, "cond_stage_model.model."))
        ref = m.text_encoder.state_dict()
        extra = {k for k in conv if k not in ref}
        # Only the file's extra last resblock has no counterpart (diffusers' SD2 ignore list
        # names the real-size block 23; the tiny file's is 2).
        assert extra and all(k.startswith("encoder.layers.2.") for k in extra)
        _assert_same({k: v for k, v in conv.items() if k not in extra}, ref, "sd2 open-clip")
    if base in ("sdxl", "sdxl_refiner"):
        prefix = "conditioner.embedders.1.model." if base == "sdxl" else "conditioner.embedders.0.model."
        conv = _flat(m.text_encoder_2, convert_open_clip_checkpoint(m.text_encoder_2, sd, prefix))
        _assert_same(conv, m.text_encoder_2.state_dict(), "open-clip-g")
    if base == "sdxl_refiner":
        assert m.text_encoder is None


def test_deterministic_and_rng_neutral():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b = tc.build_tiny_model("sd1"), tc.build_tiny_model("sd1")
    assert torch.equal(torch.rand(3), expected), "building must not consume the caller's RNG"
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    c = tc.build_tiny_model("sd1", seed=1)
    assert not torch.equal(a.state_dict[UNET + "out.2.weight"], c.state_dict[UNET + "out.2.weight"])
    with pytest.raises(ValueError):
        tc.build_tiny_model("sd3")


def test_fp16_safetensors(models, tmp_path):
    p = tc.write_safetensors(models["sd1"], tmp_path / "half.safetensors", dtype=torch.float16)
    sd = safetensors.torch.load_file(p)
    assert sd[UNET + "out.2.weight"].dtype == torch.float16
    assert sd["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == torch.int64


def test_v_prediction_marker_and_yaml(models, tmp_path):
    sd = dict(models["sd2"].state_dict)
    key = UNET + "output_blocks.3.1.transformer_blocks.0.norm1.bias"
    assert torch.std(sd[key], unbiased=False) < 0.09  # unmarked reads as epsilon
    assert tc.mark_as_v_prediction_sd2(sd) == key
    assert torch.std(sd[key], unbiased=False) > 0.09
    assert torch.std(models["sd2"].state_dict[key], unbiased=False) < 0.09  # the model's own dict untouched
    with pytest.raises(ValueError):  # SDXL's last output level has no transformer
        tc.mark_as_v_prediction_sd2(dict(models["sdxl"].state_dict))

    ckpt = tmp_path / "v2-model.safetensors"
    for v, expected in ((True, "v"), (False, "eps")):
        y = tc.write_sidecar_yaml(ckpt, v_prediction=v)
        assert y == tmp_path / "v2-model.yaml"
        assert yaml.safe_load(y.read_text())["model"]["params"]["parameterization"] == expected


def _pickle_globals(path) -> set[str]:
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    out = io.StringIO()
    pickletools.dis(data, out=out)  # disassembles without executing anything
    return {line.split("GLOBAL", 1)[1].strip().strip("'") for line in out.getvalue().splitlines()
            if "GLOBAL" in line}


def test_ckpt_like_lightning(models, tmp_path):
    m = models["sd1"]
    p = tc.write_ckpt(m, tmp_path / "model.ckpt")
    assert not any(k.startswith("pytorch_lightning") for k in sys.modules), "stand-ins must be removed"
    assert {"pytorch_lightning.callbacks.model_checkpoint ModelCheckpoint", "numpy.core.multiarray scalar",
            "numpy dtype"} <= _pickle_globals(p)

    with pytest.raises(Exception, match="ModelCheckpoint"):
        torch.load(p, weights_only=True)
    with tc.lightning_stand_in():
        obj = torch.load(p, weights_only=False)
    assert obj["global_step"] == 1234 and obj["epoch"] == 1
    (cb,) = obj["callbacks"]
    assert cb.__module__ == "pytorch_lightning.callbacks.model_checkpoint" and cb.__name__ == "ModelCheckpoint"
    assert set(obj["state_dict"]) == set(m.state_dict)
    assert all(torch.equal(obj["state_dict"][k], v) for k, v in m.state_dict.items())

    plain = tc.write_ckpt(m, tmp_path / "plain.ckpt", lightning_extras=False)
    assert set(torch.load(plain, weights_only=True)["state_dict"]) == set(m.state_dict)


def test_malicious_pickle_is_really_malicious(tmp_path):
    marker = tmp_path / "pwned.txt"
    p = tc.write_malicious_pickle(tmp_path / "evil.ckpt", marker)
    assert zipfile.is_zipfile(p)
    # protocol 2 (torch.save's default) spells builtins the Python 2 way
    assert "__builtin__ exec" in _pickle_globals(p)

    with pytest.raises(Exception, match="exec"):
        torch.load(p, weights_only=True)
    assert not marker.exists()

    # Unsafe load only in a child process confined to tmp_path.
    code = "import sys, torch; obj = torch.load(sys.argv[1], weights_only=False); print(sorted(obj))"
    res = subprocess.run([sys.executable, "-c", code, str(p)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "payload" in res.stdout and "state_dict" in res.stdout
    assert marker.read_text() == "pwned"
