"""Hypernetworks: A1111's file format, listing, `<hypernet:name:multiplier>` tags, safe reading, and applying to
a tiny SD1 pipeline for one job (and nothing left behind after it)."""
from __future__ import annotations

import math

import pytest
import safetensors.torch
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from modules.models.files import ModelFileError
from modules.networks import hypernetwork as hn
from modules.prompts import splitting
from tests.fixtures import tiny_hypernetworks as fixtures
from tests.fixtures.pipelines import build_pipeline
from tests.fixtures.tiny_checkpoints import build_tiny_model, write_malicious_pickle

# --------------------------------------------------------------------------- fixtures

class TinySD1:
    """The tiny SD1 pipeline (cross-attention context 32; self-attention widths 32 and, in the mid block, 64)."""

    def __init__(self):
        model = build_tiny_model("sd1")
        self.pipe = build_pipeline(model)
        generator = torch.Generator().manual_seed(0)
        self.latents = torch.randn(1, 4, 8, 8, generator=generator)
        self.prompt_embeds = torch.randn(1, 77, 32, generator=generator)
        self.negative_embeds = torch.randn(1, 77, 32, generator=generator)

    def run(self) -> torch.Tensor:
        with torch.no_grad():
            return self.pipe(prompt_embeds=self.prompt_embeds, negative_prompt_embeds=self.negative_embeds,
                             latents=self.latents.clone(), num_inference_steps=3, height=64, width=64,
                             guidance_scale=1.0, output_type="latent").images

    def processors(self) -> dict:
        return dict(self.pipe.unet.attn_processors)


@pytest.fixture(scope="module")
def sd1():
    tiny = TinySD1()
    tiny.original = tiny.processors()
    tiny.baseline = tiny.run()
    return tiny


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hypernetworks")
    fixtures.write_hypernetwork(root / "tiny_style.pt", name="Tiny Style")
    fixtures.write_hypernetwork(root / "sub" / "deeper" / "tiny_other.pt", seed=1)
    fixtures.write_hypernetwork(root / "misfit.pt", widths=(fixtures.MISFIT_WIDTH,), seed=2)
    fixtures.write_hypernetwork(root / "mid_only.pt", widths=(64, fixtures.MISFIT_WIDTH), seed=3)
    fixtures.write_hypernetwork(root / "None.pt")        # A1111 never lists a hypernetwork called None
    (root / "notes.txt").write_text("not a hypernetwork")
    safetensors.torch.save_file({"x": torch.zeros(1)}, str(root / "other.safetensors"))
    return root


@pytest.fixture(scope="module")
def registry(folder):
    return hn.HypernetworkRegistry(folder)


@pytest.fixture()
def cache():
    return hn.HypernetworkCache()


def assert_restored(tiny: TinySD1, run: bool = False):
    """The very processor objects of before (so the same numbers); `run` checks the output bit-for-bit too."""
    now = tiny.processors()
    assert now.keys() == tiny.original.keys()
    assert all(now[key] is tiny.original[key] for key in now)
    if run:
        assert torch.equal(tiny.run(), tiny.baseline)


def replaced(tiny: TinySD1) -> list[str]:
    return sorted(name for name, processor in tiny.processors().items()
                  if isinstance(processor, hn.HypernetworkAttnProcessor))


def _reference(module_state: dict, **config) -> torch.nn.Sequential:
    """The fixture's own A1111 layout, loaded with a module's weights (keys without the `linear.` prefix)."""
    sequential = fixtures.a1111_sequential(**config)
    sequential.load_state_dict({key.removeprefix("linear."): value for key, value in module_state.items()})
    return sequential.eval()


# --------------------------------------------------------------------------- the file format

def test_fixture_writes_a1111_key_layout():
    """The Sequential indexes A1111 files have: activations, LayerNorms and Dropouts take places too."""
    plain = fixtures.hypernetwork_dict()
    assert set(plain) >= {32, "name", "layer_structure", "activation_func", "is_layer_norm", "activate_output",
                          "use_dropout", "dropout_structure", "last_layer_dropout", "step", "sd_checkpoint"}
    assert sorted(plain[32][0]) == ["linear.0.bias", "linear.0.weight", "linear.2.bias", "linear.2.weight"]
    deep = fixtures.hypernetwork_dict(layer_structure=(1, 2, 2, 1), layer_norm=True, use_dropout=True)
    assert deep["dropout_structure"] == [0.0, 0.3, 0.3, 0.0]
    # Linear 0, ReLU 1, LayerNorm 2, Dropout 3, Linear 4, ReLU 5, LayerNorm 6, Dropout 7, Linear 8, LayerNorm 9
    assert sorted({key.rsplit(".", 1)[0] for key in deep[32][1]}, key=lambda k: int(k.split(".")[1])) == [
        "linear.0", "linear.2", "linear.4", "linear.6", "linear.8", "linear.9"]
    assert deep[32][0]["linear.4.weight"].shape == (64, 64)


@pytest.mark.parametrize("config", [
    {"layer_structure": (1, 2, 1), "activation": "relu"},
    {"layer_structure": (1, 2, 2, 1), "activation": "relu", "layer_norm": True, "use_dropout": True},
    {"layer_structure": (1, 1.5, 1), "activation": "tanh", "activate_output": True},
    {"layer_structure": (1, 2, 1), "activation": "swish"},          # A1111: "swish" is Hardswish
    {"layer_structure": (1, 2, 1), "activation": None},
    {"layer_structure": (1, 2, 1), "activation": "linear"},
])
def test_loaded_modules_compute_a1111s_formula(tmp_path, config):
    path = fixtures.write_hypernetwork(tmp_path / "h.pt", widths=(32, 48), **config)
    data = torch.load(path, weights_only=True)
    loaded = hn.load_hypernetwork(path)
    assert loaded.widths == [32, 48] and loaded.name == "tiny" and loaded.metadata["step"] == 1000
    dropout = data["dropout_structure"]
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    for index in (0, 1):
        reference = _reference(data[32][index], dim=32, layer_structure=data["layer_structure"],
                               activation=config["activation"], layer_norm=config.get("layer_norm", False),
                               activate_output=config.get("activate_output", False), dropout_structure=dropout)
        with torch.no_grad():
            expected = x + reference(x) * 0.7
            assert torch.allclose(loaded.layers[32][index](x, 0.7), expected, atol=1e-6)
            assert not torch.allclose(expected, x)


def test_defaults_of_files_without_metadata(tmp_path):
    """Missing `activate_output` means True (A1111's load default): the activation then follows the last Linear."""
    data = fixtures.hypernetwork_dict(activation="tanh")
    for key in ("activate_output", "layer_structure", "dropout_structure", "use_dropout", "name"):
        del data[key]
    torch.save(data, tmp_path / "old.pt")
    loaded = hn.load_hypernetwork(tmp_path / "old.pt")
    assert loaded.activate_output and loaded.layer_structure == (1.0, 2.0, 1.0) and loaded.name == "old"
    reference = _reference(data[32][0], dim=32, activation="tanh", activate_output=True)
    x = torch.randn(3, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.layers[32][0](x), x + reference(x), atol=1e-6)


def test_oldest_format_linear1_linear2(tmp_path):
    path = fixtures.write_legacy_hypernetwork(tmp_path / "legacy.pt")
    data = torch.load(path, weights_only=True)
    loaded = hn.load_hypernetwork(path)
    module = loaded.layers[32][1]
    state = data[32][1]
    x = torch.randn(4, 32)
    with torch.no_grad():
        hidden = x @ state["linear1.weight"].T + state["linear1.bias"]
        expected = x + (hidden @ state["linear2.weight"].T + state["linear2.bias"])
        assert torch.allclose(module(x), expected, atol=1e-5)


def _with(**changes):
    def build():
        data = fixtures.hypernetwork_dict()
        data.update(changes)
        return data
    return build


def _broken_weights(key, value):
    def build():
        data = fixtures.hypernetwork_dict()
        first = dict(data[32][0])
        first[key] = value
        data[32] = (first, data[32][1])
        return data
    return build


@pytest.mark.parametrize("build, reason", [
    (lambda: [1, 2, 3], "does not hold a dict"),
    (lambda: {"name": "x", "layer_structure": [1, 2, 1]}, "no modules"),
    (_with(activation_func="frobnicate"), "activation function 'frobnicate'"),
    (_with(activation_func="multiheadattention"), "activation function 'multiheadattention'"),
    (_with(activation_func=None, is_layer_norm=True), "do not match"),
    (_with(layer_structure=[2, 1]), "start and end with 1"),
    (_with(layer_structure="1, 2, 1"), "layer_structure"),
    (_with(layer_structure=[1, 1e9, 1]), "shape"),         # checked before anything of that size is built
    (_with(dropout_structure=[0, 1.5, 0]), "dropout_structure"),
    (_with(is_layer_norm="yes"), "is_layer_norm"),
    (lambda: {32: (fixtures.hypernetwork_dict()[32][0],)}, "pair of state dicts"),
    (_broken_weights("linear.0.weight", torch.zeros(3, 3)), "shape"),
    (_broken_weights("linear.0.weight", "not a tensor"), "named tensors"),
    (_broken_weights("linear.0.weight", torch.zeros(64, 32, dtype=torch.int64)), "floating-point"),
])
def test_malformed_files_name_the_file_and_the_reason(tmp_path, build, reason):
    path = tmp_path / "broken_hn.pt"
    torch.save(build(), path)
    with pytest.raises(hn.HypernetworkError, match="broken_hn.pt") as raised:
        hn.load_hypernetwork(path)
    assert reason in str(raised.value)
    assert isinstance(raised.value, ModelFileError)


def test_non_hypernetwork_files_are_refused(tmp_path):
    safetensors.torch.save_file({"linear.0.weight": torch.zeros(2, 2)}, str(tmp_path / "st.pt"))
    with pytest.raises(ModelFileError, match="st.pt.*no modules"):
        hn.load_hypernetwork(tmp_path / "st.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelFileError, match="text.pt"):
        hn.load_hypernetwork(tmp_path / "text.pt")
    (tmp_path / "cut.pt").write_bytes(fixtures.write_hypernetwork(tmp_path / "whole.pt").read_bytes()[:300])
    with pytest.raises(ModelFileError, match="cut.pt"):
        hn.load_hypernetwork(tmp_path / "cut.pt")


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, sd1, cache):
    marker = tmp_path / "pwned"
    path = write_malicious_pickle(tmp_path / "evil.pt", marker)
    with pytest.raises(ModelFileError, match="evil.pt"):
        hn.load_hypernetwork(path)
    registry = hn.HypernetworkRegistry(tmp_path)
    assert [info.name for info in registry.items()] == ["evil"]      # listing never opens a file
    with hn.applied(sd1.pipe, [(registry.find("evil"), 1.0)], cache) as warnings:
        assert len(warnings) == 1 and "evil" in warnings[0] and "cannot be read" in warnings[0]
        assert replaced(sd1) == []
    assert not marker.exists()
    assert_restored(sd1)


# --------------------------------------------------------------------------- listing and tags

def test_registry_lists_pt_files_recursively_by_stem(registry, folder):
    assert sorted(info.name for info in registry.items()) == ["mid_only", "misfit", "tiny_other", "tiny_style"]
    assert registry.find("tiny_other").path == (folder / "sub" / "deeper" / "tiny_other.pt").resolve()
    for name in ("None", "other", "notes", "../tiny_style", "tiny_style.pt", "", None):
        assert registry.find(name) is None
    listed = hn.api_list(registry)
    assert {"name": "tiny_style", "path": str((folder / "tiny_style.pt").resolve())} in listed
    assert all(set(entry) == {"name", "path"} for entry in listed)


def test_refresh_picks_up_new_and_removed_files(tmp_path):
    registry = hn.HypernetworkRegistry(tmp_path / "missing")
    assert registry.items() == []
    fixtures.write_hypernetwork(tmp_path / "a.pt")
    registry = hn.HypernetworkRegistry(tmp_path)
    fixtures.write_hypernetwork(tmp_path / "b.pt")
    assert [info.name for info in registry.refresh()] == ["a", "b"]
    (tmp_path / "a.pt").unlink()
    registry.refresh()
    assert [info.name for info in registry.items()] == ["b"]


def test_tags_follow_a1111_rules(registry):
    _, tags = splitting.extract_networks("a cat <hypernet:tiny_style> <hypernet:tiny_other:0.5> <hypernet:nope:1> "
                                      "<hypernet:tiny_style:abc> <hypernet:tiny_style:inf> <lora:tiny_style:1>")
    requests, warnings = hn.requests_from_tags(tags, registry)
    assert [(info.name, multiplier) for info, multiplier in requests] == [("tiny_style", 1.0), ("tiny_other", 0.5)]
    assert warnings[0] == "Hypernetwork not found: nope"
    assert "'abc'" in warnings[1] and "'inf'" in warnings[2] and len(warnings) == 3


# --------------------------------------------------------------------------- the attention maths

def _manual_attention(attn: Attention, x: torch.Tensor, context_k: torch.Tensor, context_v: torch.Tensor):
    q, k, v = attn.to_q(x), attn.to_k(context_k), attn.to_v(context_v)
    q, k, v = (t.view(t.shape[0], t.shape[1], attn.heads, -1).transpose(1, 2) for t in (q, k, v))
    weights = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    return attn.to_out[0](out)


def test_processor_is_a1111s_attention_with_hypernetworks_in_sequence(tmp_path):
    first = hn.load_hypernetwork(fixtures.write_hypernetwork(tmp_path / "a.pt", seed=5))
    second = hn.load_hypernetwork(fixtures.write_hypernetwork(tmp_path / "b.pt", seed=6, activation="elu"))
    torch.manual_seed(0)
    cross = Attention(query_dim=16, cross_attention_dim=32, heads=2, dim_head=8).eval()
    own = Attention(query_dim=32, heads=4, dim_head=8).eval()
    x16, x32, context = torch.randn(2, 6, 16), torch.randn(2, 6, 32), torch.randn(2, 7, 32)
    modules = [(*first.layers[32], 0.8), (*second.layers[32], 1.5)]
    processor = hn.HypernetworkAttnProcessor(AttnProcessor2_0(), modules)
    with torch.no_grad():
        context_k = second.layers[32][0](first.layers[32][0](context, 0.8), 1.5)
        context_v = second.layers[32][1](first.layers[32][1](context, 0.8), 1.5)
        assert torch.allclose(processor(cross, x16, context), _manual_attention(cross, x16, context_k, context_v),
                              atol=1e-5)
        self_k = second.layers[32][0](first.layers[32][0](x32, 0.8), 1.5)    # self-attention: context = x
        self_v = second.layers[32][1](first.layers[32][1](x32, 0.8), 1.5)
        assert torch.allclose(processor(own, x32), _manual_attention(own, x32, self_k, self_v), atol=1e-5)
        assert not torch.allclose(processor(own, x32), AttnProcessor2_0()(own, x32), atol=1e-3)


def test_processor_at_multiplier_zero_is_diffusers_sdpa_bit_for_bit(sd1, registry, cache):
    """Forced onto every fitting layer with multiplier 0, our processor gives diffusers' exact numbers."""
    network = cache.get(registry.find("tiny_style").path)
    layers = [layer for layer in hn.attention_layers(sd1.pipe) if layer.width == 32]
    try:
        for layer in layers:
            layer.attn.set_processor(hn.HypernetworkAttnProcessor(layer.attn.processor,
                                                                  [(*network.layers[32], 0.0)]))
        assert torch.equal(sd1.run(), sd1.baseline)
    finally:
        for layer in layers:
            layer.attn.set_processor(layer.attn.processor.original)
    assert_restored(sd1)


# --------------------------------------------------------------------------- one job on a tiny SD1 pipeline

def test_hypernetwork_changes_the_output_and_is_removed_bit_for_bit(sd1, registry, cache):
    with hn.applied(sd1.pipe, [(registry.find("tiny_style"), 1.0)], cache) as warnings:
        assert list(warnings) == []
        assert [info.name for info, _ in warnings.hypernetworks] == ["tiny_style"]
        # every cross-attention layer (context 32) and the self-attention layers that are 32 wide
        expected = sorted(f"{layer.name.removeprefix('unet.')}.processor" for layer in hn.attention_layers(sd1.pipe)
                          if layer.width == 32)
        assert replaced(sd1) == expected
        assert any(".attn1." in name for name in expected) and any(".attn2." in name for name in expected)
        assert all(sd1.processors()[name].original is sd1.original[name] for name in expected)
        output = sd1.run()
    assert (output - sd1.baseline).abs().max() > 1e-3
    assert_restored(sd1, run=True)


def test_multiplier_scales_and_zero_is_the_baseline(sd1, registry, cache):
    info = registry.find("tiny_style")
    with hn.applied(sd1.pipe, [(info, 0.0)], cache) as warnings:
        assert list(warnings) == [] and replaced(sd1) == []
        assert torch.equal(sd1.run(), sd1.baseline)
    outputs = []
    for multiplier in (0.5, 1.0):
        with hn.applied(sd1.pipe, [(info, multiplier)], cache):
            outputs.append(sd1.run())
    assert not torch.equal(outputs[0], outputs[1])
    assert (outputs[0] - sd1.baseline).abs().max() < (outputs[1] - sd1.baseline).abs().max()
    assert_restored(sd1)


def test_two_hypernetworks_apply_in_sequence(sd1, registry, cache):
    one, other = registry.find("tiny_style"), registry.find("tiny_other")
    with hn.applied(sd1.pipe, [(one, 1.0)], cache):
        single = sd1.run()
    with hn.applied(sd1.pipe, [(one, 1.0), (other, 1.0)], cache) as warnings:
        assert list(warnings) == []
        processor = next(p for p in sd1.processors().values() if isinstance(p, hn.HypernetworkAttnProcessor))
        assert len(processor.modules) == 2
        both = sd1.run()
    assert not torch.equal(single, both)
    assert_restored(sd1)


def test_a_misfit_hypernetwork_is_a_warning_and_changes_nothing(sd1, registry, cache):
    with hn.applied(sd1.pipe, [(registry.find("misfit"), 1.0)], cache) as warnings:
        assert len(warnings) == 1
        assert "misfit" in warnings[0] and "[48]" in warnings[0] and "not applied" in warnings[0]
        assert warnings.hypernetworks == [] and replaced(sd1) == []
        assert torch.equal(sd1.run(), sd1.baseline)
    assert_restored(sd1)


def test_self_attention_only_fit_is_applied_as_a1111_with_a_warning(sd1, registry, cache):
    """A file with no module for the text-context width still changes the self-attention layers it fits
    (A1111 applies to every attention layer whose context width has a module), and says so."""
    with hn.applied(sd1.pipe, [(registry.find("mid_only"), 1.0), (registry.find("tiny_style"), 0.0)],
                    cache) as warnings:
        assert len(warnings) == 1 and "mid_only" in warnings[0] and "self-attention" in warnings[0]
        assert replaced(sd1) == ["mid_block.attentions.0.transformer_blocks.0.attn1.processor"]
        output = sd1.run()
    assert not torch.equal(output, sd1.baseline)
    assert_restored(sd1)


def test_an_exception_inside_the_block_still_restores(sd1, registry, cache):
    with pytest.raises(RuntimeError, match="boom"), \
            hn.applied(sd1.pipe, [(registry.find("tiny_style"), 1.0)], cache):
        assert replaced(sd1)
        raise RuntimeError("boom")
    assert_restored(sd1)


def test_cache_reuses_and_follows_file_changes(tmp_path):
    path = fixtures.write_hypernetwork(tmp_path / "h.pt")
    cache = hn.HypernetworkCache(max_items=1)
    first = cache.get(path)
    assert cache.get(path) is first
    fixtures.write_hypernetwork(path, seed=9, widths=(32, 64))
    assert cache.get(path).widths == [32, 64]
    other = fixtures.write_hypernetwork(tmp_path / "o.pt")
    cache.get(other)
    assert cache.get(path) is not first and len(cache._items) == 1


def test_nested_blocks_stack_and_unwind(sd1, registry, cache):
    with hn.applied(sd1.pipe, [(registry.find("tiny_style"), 1.0)], cache):
        outer = dict(sd1.processors())
        with hn.applied(sd1.pipe, [(registry.find("tiny_other"), 0.5)], cache):
            inner = next(p for p in sd1.processors().values() if isinstance(p, hn.HypernetworkAttnProcessor))
            assert [m for _, _, m in inner.modules] == [1.0, 0.5]
            assert isinstance(inner.original, AttnProcessor2_0)
        assert all(sd1.processors()[key] is outer[key] for key in outer)
    assert_restored(sd1)
