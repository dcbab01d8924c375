"""LoRA applied for one job: kohya files (and LoCon, the diffusers and legacy layouts) merged into tiny SD1/SDXL
pipelines and removed bit for bit afterwards; files for another family, unsupported kinds and damaged files are
warnings (listing, hashes and tags: test_lora_files.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.models import families, files
from modules.networks import lora
from modules.networks.lora import apply as lora_apply
from tests.fixtures import tiny_loras
from tests.fixtures.lora_targets import Tiny, assert_restored, changed, changed_layers, write_lora_folder


@pytest.fixture(scope="module")
def sd1():
    return Tiny("sd1").keep_reference()


@pytest.fixture(scope="module")
def sdxl():
    return Tiny("sdxl").keep_reference()


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, sd1, sdxl):
    return write_lora_folder(tmp_path_factory.mktemp("Lora"), sd1.model, sdxl.model)


@pytest.fixture(scope="module")
def registry(lora_dir):
    return lora.LoraRegistry(lora_dir)


@pytest.fixture()
def cache():
    return lora.LoraCache(max_items=16)


# --------------------------------------------------------------------------- does it fit the checkpoint

def test_fits_reports_the_reason(sd1, sdxl):
    assert lora.fits(tiny_loras.kohya_lora(sd1.model), sd1.pipe) is None
    assert lora.fits(tiny_loras.kohya_lora(sdxl.model), sdxl.pipe) is None
    reason = lora.fits(tiny_loras.kohya_lora(sdxl.model), sd1.pipe)
    assert reason.startswith("made for SDXL, but the checkpoint is SD 1.x:") and "/80 keys match" in reason
    reason = lora.fits(tiny_loras.kohya_lora(sd1.model), sdxl.pipe, families.SDXL)
    # the mid-block self-attention has the same widths in both tiny models; the rest does not match
    assert reason == "made for SD 1.x, but the checkpoint is SDXL: 6/40 keys match"


# --------------------------------------------------------------------------- applying

def test_sd1_lora_changes_the_image_and_is_removed_bit_for_bit(sd1, registry, cache):
    info = registry.find("sd1_style")
    with lora.applied(sd1.pipe, families.SD1, [(info, 1.0, 1.0)], cache) as result:
        assert list(result) == [] and result.loras == [info]
        assert changed_layers(sd1) == {"unet": 32, "text_encoder": 8}   # 4 blocks x 8 projections; 2 layers x 4
        assert sd1.structure() == sd1.tree     # merged: sampling runs the model's own layers, no adapter around them
        image = sd1.run()
    assert changed(image, sd1.baseline) > 1e-3
    assert_restored(sd1)
    with lora.applied(sd1.pipe, families.SD1, [(info, 1.0, 1.0)], cache):   # the same again: same pixels, from cache
        assert np.array_equal(sd1.run(), image)
    assert len(cache) == 1
    assert_restored(sd1)


def test_text_encoder_and_unet_weights_each_change_the_image(sd1, registry, cache):
    info = registry.find("sd1_style")
    images = {}
    for te, unet in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5)):
        with lora.applied(sd1.pipe, families.SD1, [(info, te, unet)], cache):
            images[te, unet] = sd1.run()
        assert changed(images[te, unet], sd1.baseline) > 1e-4, (te, unet)
    assert changed(images[1.0, 0.0], images[0.0, 1.0]) > 1e-4
    assert changed(images[0.5, 0.5], images[1.0, 0.0]) > 1e-4
    assert_restored(sd1)


def test_te_only_and_unet_only_files(sd1, registry, cache):
    for name in ("sd1_te_only", "sd1_unet_only"):
        with lora.applied(sd1.pipe, families.SD1, [(registry.find(name), 1.0, 1.0)], cache) as result:
            assert list(result) == []
            assert changed(sd1.run(), sd1.baseline) > 1e-4, name
    assert_restored(sd1)


def test_two_loras_at_once(sd1, registry, cache):
    one, two = registry.find("sd1_style"), registry.find("sd1_other")
    with lora.applied(sd1.pipe, families.SD1, [(one, 1.0, 1.0)], cache):
        only_one = sd1.run()
    with lora.applied(sd1.pipe, families.SD1, [(two, 1.0, 1.0)], cache):
        only_two = sd1.run()
    with lora.applied(sd1.pipe, families.SD1, [(one, 1.0, 1.0), (two, 0.7, 0.7)], cache) as result:
        assert list(result) == [] and result.loras == [one, two]
        assert sd1.structure() == sd1.tree
        both = sd1.run()
    assert min(changed(both, only_one), changed(both, only_two), changed(both, sd1.baseline)) > 1e-4
    assert_restored(sd1)


def test_a_lora_named_twice_is_applied_once_with_the_sum_of_its_weights(sd1, registry, cache, monkeypatch):
    """A1111 applies each mention, and the change is proportional to the weight: the same image, at the cost of one."""
    info = registry.find("sd1_style")
    with lora.applied(sd1.pipe, families.SD1, [(info, 1.0, 0.5)], cache):
        once = sd1.run()
    loads = []
    original = sd1.pipe.load_lora_weights
    monkeypatch.setattr(sd1.pipe, "load_lora_weights", lambda *args, **kwargs: (loads.append(1),
                                                                                original(*args, **kwargs)))
    with lora.applied(sd1.pipe, families.SD1, [(info, 0.25, 0.125)] * 4, cache) as result:
        assert len(loads) == 1 and result.loras == [info]
        assert np.allclose(sd1.run(), once, atol=1e-6)
    assert_restored(sd1)


def test_each_lora_loads_into_a_model_without_adapters(sd1, registry, cache, monkeypatch):
    """peft's loading slows with every adapter already present; one at a time keeps n LoRAs at n times one."""
    present = []
    original = sd1.pipe.load_lora_weights

    def load(*args, **kwargs):
        present.append(sum(len(names) for names in sd1.pipe.get_list_adapters().values()))
        return original(*args, **kwargs)

    monkeypatch.setattr(sd1.pipe, "load_lora_weights", load)
    names = ["sd1_style", "sd1_other", "sd1_te_only", "sd1_unet_only", "sd1_locon"]
    with lora.applied(sd1.pipe, families.SD1, [(registry.find(name), 0.5, 0.5) for name in names], cache) as result:
        assert len(result.loras) == 5 and present == [0, 0, 0, 0, 0]
    assert_restored(sd1)


def test_an_interrupt_between_loras_stops_and_restores(sd1, registry, cache):
    from modules.diffusion import stop_points

    seen = []

    def should_stop():
        seen.append(1)
        return len(seen) > 1    # after the first LoRA

    requests = [(registry.find(name), 1.0, 1.0) for name in ("sd1_style", "sd1_other")]
    with pytest.raises(stop_points.Interrupted), lora.applied(sd1.pipe, families.SD1, requests, cache, should_stop):
        pass
    assert_restored(sd1)


def test_weight_zero_is_the_baseline(sd1, registry, cache):
    info = registry.find("sd1_style")
    with lora.applied(sd1.pipe, families.SD1, [(info, 0.0, 0.0)], cache) as result:
        assert list(result) == [] and result.loras == [info]      # still listed for "Lora hashes", as A1111
        assert np.array_equal(sd1.run(), sd1.baseline)
    assert_restored(sd1)


def test_locon_convolution_layers_are_applied(sd1, registry, cache):
    with lora.applied(sd1.pipe, families.SD1, [(registry.find("sd1_locon"), 1.0, 1.0)], cache) as result:
        assert list(result) == []
        assert changed_layers(sd1)["unet"] == 32 + 16     # attention + resnet convs
        assert changed(sd1.run(), sd1.baseline) > 1e-4
    assert_restored(sd1)


def test_sdxl_lora_with_sgm_names_applies_to_all_three_parts(sdxl, registry, cache):
    info = registry.find("SDXL Style")
    with lora.applied(sdxl.pipe, families.SDXL, [(info, 1.0, 1.0)], cache) as result:
        assert list(result) == []
        assert changed_layers(sdxl) == {"unet": 64, "text_encoder": 8, "text_encoder_2": 8}
        image = sdxl.run()
    assert changed(image, sdxl.baseline) > 1e-4
    with lora.applied(sdxl.pipe, families.SDXL, [(info, 1.0, 0.0)], cache):
        assert changed(sdxl.run(), sdxl.baseline) > 1e-4                  # the text encoders alone
    assert_restored(sdxl)


def test_sd1_lora_on_sdxl_is_a_warning_and_not_applied(sdxl, registry, cache):
    with lora.applied(sdxl.pipe, families.SDXL, [(registry.find("sd1_style"), 1.0, 1.0)], cache) as result:
        assert result.loras == []
        assert list(result) == [("LoRA sd1_style: made for SD 1.x, but the checkpoint is SDXL: 6/40 keys match; "
                                 "not applied")]
        assert not any(sdxl.pipe.get_list_adapters().values())
        assert np.array_equal(sdxl.run(), sdxl.baseline)
    assert_restored(sdxl)


def test_sdxl_lora_on_sd1_is_a_warning_and_the_other_lora_still_applies(sd1, registry, cache):
    requests = [(registry.find("sdxl_style"), 1.0, 1.0), (registry.find("sd1_style"), 1.0, 1.0)]
    with lora.applied(sd1.pipe, families.SD1, requests, cache) as result:
        assert len(result) == 1 and result[0].startswith("LoRA sdxl_style: made for SDXL, but the checkpoint is SD 1.x")
        assert [info.name for info in result.loras] == ["sd1_style"]
        assert changed(sd1.run(), sd1.baseline) > 1e-4
    assert_restored(sd1)


@pytest.mark.parametrize("name, kind", [("sd1_loha", "LoHa"), ("sd1_lokr", "LoKr")])
def test_unsupported_lycoris_types_are_named_in_a_warning(sd1, registry, cache, name, kind):
    with lora.applied(sd1.pipe, families.SD1, [(registry.find(name), 1.0, 1.0)], cache) as result:
        assert result.loras == [] and len(result) == 1
        assert f"LoRA {name}: {kind} networks are not supported" in result[0]
        assert np.array_equal(sd1.run(), sd1.baseline)
    assert_restored(sd1)


def test_an_exception_inside_the_block_still_removes_the_adapters(sd1, registry, cache):
    with (pytest.raises(RuntimeError, match="boom"),
          lora.applied(sd1.pipe, families.SD1, [(registry.find("sd1_style"), 1.0, 1.0)], cache)):
        assert changed_layers(sd1)
        raise RuntimeError("boom")
    assert_restored(sd1)


def test_damaged_and_hostile_files_are_warnings(sd1, tmp_path, cache):
    folder = tmp_path / "Lora"
    good = tiny_loras.kohya_lora(sd1.model)
    tiny_loras.write_lora(good, folder / "truncated.safetensors")
    data = (folder / "truncated.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) - 100])
    hostile = dict(good)
    hostile["lora_unet___class__.lora_down.weight"] = torch.zeros(4, 32)
    tiny_loras.write_lora(hostile, folder / "hostile.safetensors")
    tiny_loras.write_lora({"lora_unet_down_blocks_0_attentions_0_proj_in.weight": torch.zeros(2, 2)},
                          folder / "empty.safetensors")
    registry = lora.LoraRegistry(folder)
    requests = [(registry.find(name), 1.0, 1.0) for name in ("truncated", "hostile", "empty")]
    with lora.applied(sd1.pipe, families.SD1, requests, cache) as result:
        assert result.loras == [] and len(result) == 3
        assert result[0].startswith("LoRA truncated: cannot be read")
        assert result[1].startswith("LoRA hostile: refused")
        assert result[2].startswith("LoRA empty:") and "not applied" in result[2]
    assert_restored(sd1)


def test_layers_the_model_lacks_are_skipped_with_a_warning(sd1, tmp_path, cache):
    sd = tiny_loras.kohya_lora(sd1.model)
    extra = "lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q"
    sd |= {f"{extra}.lora_down.weight": torch.ones(4, 32), f"{extra}.lora_up.weight": torch.ones(32, 4),
           f"{extra}.alpha": torch.tensor(4.0)}
    tiny_loras.write_lora(sd, tmp_path / "Lora" / "extra.safetensors")
    info = lora.LoraRegistry(tmp_path / "Lora").find("extra")
    with lora.applied(sd1.pipe, families.SD1, [(info, 1.0, 1.0)], cache) as result:
        assert result.loras == [info]
        assert result[0] == (f"LoRA extra: 1 of 41 layers have no counterpart in this checkpoint and were skipped "
                             f"(e.g. {extra})")
        assert changed(sd1.run(), sd1.baseline) > 1e-4
    assert_restored(sd1)


def test_weights_follow_a1111_maths(sd1, registry, cache):
    """A layer computes W x + multiplier * alpha / rank * up(down(x)), with the TE and UNet multipliers apart."""
    info = registry.find("sd1_style")
    file = files.load_state_dict(info.path)
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    layers = [(sd1.pipe.unet, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q",
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q", 0.7),
              (sd1.pipe.text_encoder, "encoder.layers.1.self_attn.out_proj",
               "lora_te_text_model_encoder_layers_1_self_attn_out_proj", 0.5)]
    originals = {name: (model.get_submodule(name).weight.detach().clone(), model.get_submodule(name).bias)
                 for model, name, _, _ in layers}
    with lora.applied(sd1.pipe, families.SD1, [(info, 0.5, 0.7)], cache):
        for model, name, key, multiplier in layers:
            layer = model.get_submodule(name)
            weight, bias = originals[name]
            down, up = file[f"{key}.lora_down.weight"], file[f"{key}.lora_up.weight"]
            scale = multiplier * float(file[f"{key}.alpha"]) / down.shape[0]
            expected = torch.nn.functional.linear(x, weight + scale * up @ down, bias)
            with torch.no_grad():
                assert torch.allclose(layer(x), expected, atol=1e-5), name
    assert_restored(sd1)


def test_every_key_layout_gives_the_same_image(sd1, tmp_path, cache):
    """kohya with diffusers or SGM UNet names, diffusers/peft format, and the old attention-processor format."""
    kohya = tiny_loras.kohya_lora(sd1.model, alpha=tiny_loras.RANK)      # alpha = rank: scale 1 in every format
    dotted = {"lora_unet_" + name.replace(".", "_"): "unet." + name for name, _ in sd1.pipe.unet.named_modules()}
    dotted |= {"lora_te_text_model_" + name.replace(".", "_"): "text_encoder.text_model." + name
               for name, _ in sd1.pipe.text_encoder.named_modules()}
    peft_format, legacy = {}, {}
    for key, value in kohya.items():
        module, _, part = key.partition(".")
        if part == "alpha":
            continue
        name = dotted[module]
        peft_format[f"{name}.{'lora_A' if part == 'lora_down.weight' else 'lora_B'}.weight"] = value
        direction = "down" if part == "lora_down.weight" else "up"
        if name.startswith("unet."):    # attn1.processor.to_q_lora.down.weight
            block, _, projection = name.removesuffix(".0").rpartition(".")
            legacy[f"{block}.processor.{projection}_lora.{direction}.weight"] = value
        else:
            legacy[f"{name}.lora_linear_layer.{direction}.weight"] = value
    sgm = tiny_loras.kohya_lora(sd1.model, alpha=tiny_loras.RANK, sgm_names=True)
    assert any(key.startswith("lora_unet_input_blocks_1_1_") for key in sgm)
    for name, state_dict in (("kohya", kohya), ("sgm", sgm), ("diffusers", peft_format), ("legacy", legacy)):
        tiny_loras.write_lora(state_dict, tmp_path / "Lora" / f"{name}.safetensors")
    registry = lora.LoraRegistry(tmp_path / "Lora")
    images = []
    for name in ("kohya", "sgm", "diffusers", "legacy"):
        assert lora.lora_family(files.load_state_dict(registry.find(name).path)).id == "sd1", name
        with lora.applied(sd1.pipe, families.SD1, [(registry.find(name), 1.0, 1.0)], cache) as result:
            assert list(result) == [], name
            assert changed_layers(sd1) == {"unet": 32, "text_encoder": 8}, name
            images.append(sd1.run())
    assert changed(images[0], sd1.baseline) > 1e-4
    assert all(np.array_equal(images[0], image) for image in images[1:])
    assert_restored(sd1)


def test_a_load_that_fails_half_way_is_cleaned_up_and_the_others_still_apply(sd1, registry, cache, monkeypatch):
    original = sd1.pipe.load_lora_weights
    calls = []

    def fails_after_injecting(state_dict, adapter_name):
        calls.append(adapter_name)
        original(state_dict, adapter_name=adapter_name)
        if len(calls) == 1:
            raise RuntimeError("late\nfailure")

    monkeypatch.setattr(sd1.pipe, "load_lora_weights", fails_after_injecting)
    requests = [(registry.find("sd1_other"), 1.0, 1.0), (registry.find("sd1_style"), 1.0, 1.0)]
    with lora.applied(sd1.pipe, families.SD1, requests, cache) as result:
        assert list(result) == ["LoRA sd1_other: could not be applied: late failure"]
        assert [info.name for info in result.loras] == ["sd1_style"]
        assert lora_apply._injected_layers(sd1.pipe, calls[0]) == {"unet": 0, "text_encoder": 0}
        image = sd1.run()
    monkeypatch.undo()
    with lora.applied(sd1.pipe, families.SD1, [(registry.find("sd1_style"), 1.0, 1.0)], cache):
        assert np.array_equal(sd1.run(), image)
    assert_restored(sd1)
