"""torch.compile of the UNet and VAE (compile_unet / compile_vae): same images, the per-job forward wrappers on top
of the compiled forward without recompiling, LoRAs never served by a stale graph, "None" giving the model back
exactly, and the on-disk cache making a restarted process skip inductor's code generation.

Inductor's C++ code generation of even the tiny UNet takes about a minute on two CPU cores, so the in-process
tests compile through dynamo with the "eager" and "aot_eager" backends (the same graph capture, guards and
recompiles, run by PyTorch's own kernels), and the inductor test (numbers and the persistent cache) compiles one
of the UNet's ResNet blocks in two fresh processes.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from modules.diffusion import compilation, features
from modules.devices import FULL, LOWVRAM, MEDVRAM
from modules.models import families
from modules.networks import lora
from modules.script_callbacks import CallbackRegistry
from modules.diffusion.unet_forward import replaced_forward
from tests.fixtures.pipelines import build_pipeline
from tests.fixtures import tiny_loras
from tests.fixtures.tiny_checkpoints import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
NOISE = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
WIDE_NOISE = torch.randn(1, 4, 8, 10, generator=torch.Generator().manual_seed(1))


def run(pipe, noise=NOISE, output_type="latent") -> np.ndarray:
    """A fixed-noise 2-step generation with CFG (the UNet sees a batch of 2); latents, or the decoded image."""
    height, width = noise.shape[2] * 8, noise.shape[3] * 8
    with torch.no_grad():
        images = pipe(prompt="a photo of a cat", negative_prompt="blurry", latents=noise.clone(),
                      num_inference_steps=2, height=height, width=width, output_type=output_type).images
    return images.numpy() if torch.is_tensor(images) else np.asarray(images)


@pytest.fixture(scope="module")
def tiny():
    model = build_tiny_model("sd1")
    eager, compiled = build_pipeline(model), build_pipeline(model)
    return SimpleNamespace(model=model, eager=eager, compiled=compiled,
                           baseline=run(eager), baseline_image=run(eager, output_type="np"))


@pytest.fixture()
def counter(tiny):
    """A fresh dynamo (no graphs from other tests) and a backend counting each graph it compiles; the compiled
    pipeline is plain again afterwards."""
    torch._dynamo.reset()
    yield CompileCounterWithBackend("eager")
    compilation.apply(tiny.compiled, compilation.NONE, False, cuda=False)
    torch._dynamo.reset()


def test_compiled_unet_and_vae_give_the_same_image_and_none_restores_the_model_exactly(tiny, counter):
    counter = CompileCounterWithBackend("aot_eager")   # with AOTAutograd's decompositions, as inductor sees them
    unet, decoder = tiny.compiled.unet, tiny.compiled.vae.decoder
    assert "forward" not in unet.__dict__ and "forward" not in decoder.__dict__
    compilation.apply(tiny.compiled, compilation.COMPILE, True, cuda=False, backend=counter)
    assert compilation.compiled_mode(unet) == compilation.COMPILE
    assert compilation.compiled_mode(decoder) == compilation.COMPILE
    installed = unet.__dict__["forward"]
    np.testing.assert_allclose(run(tiny.compiled), tiny.baseline, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run(tiny.compiled, output_type="np"), tiny.baseline_image, atol=1e-5)
    assert counter.frame_count == 2   # the UNet at batch 2 (CFG) and the decoder: compiled once each
    compilation.apply(tiny.compiled, compilation.COMPILE, True, cuda=False, backend=counter)   # the next job
    assert unet.__dict__["forward"] is installed   # unchanged settings: nothing redone
    # compile_vae off: only the decoder is given back
    compilation.apply(tiny.compiled, compilation.COMPILE, False, cuda=False, backend=counter)
    assert unet.__dict__["forward"] is installed and "forward" not in decoder.__dict__
    compilation.apply(tiny.compiled, compilation.NONE, True, cuda=False, backend=counter)
    assert "forward" not in unet.__dict__ and "forward" not in decoder.__dict__   # the class's own forward again
    assert compilation.compiled_mode(unet) == compilation.NONE
    assert np.array_equal(run(tiny.compiled, output_type="np"), tiny.baseline_image)
    assert counter.frame_count == 2


def test_per_job_wrappers_run_on_top_of_the_compiled_forward_without_recompiling(tiny, counter):
    unet = tiny.compiled.unet
    compilation.apply(tiny.compiled, compilation.COMPILE, False, cuda=False, backend=counter)
    compiled_forward = unet.forward
    assert np.allclose(run(tiny.compiled), tiny.baseline, rtol=1e-4, atol=1e-5)
    graphs = counter.frame_count

    def job(callbacks_seen: list) -> np.ndarray:
        """What a job does: an extension's cfg callback (features.cfg_callbacks) and a wrapper like ControlNet's
        (unet_forward.replaced_forward), both fresh closures over the forward in place."""
        registry = CallbackRegistry()
        registry.add("cfg_denoised", lambda params: callbacks_seen.append(params.x.shape))
        previous = unet.forward

        def doubled(sample, timestep, encoder_hidden_states, *args, **kwargs):
            output = previous(sample, timestep, encoder_hidden_states, *args, **kwargs)
            return (output[0] * 2, *output[1:]) if isinstance(output, tuple) else type(output)(sample=output.sample * 2)

        with replaced_forward(unet, doubled), features.cfg_callbacks(unet, registry, lambda: 0, 2, 1):
            return run(tiny.compiled)

    first_seen, second_seen = [], []
    first = job(first_seen)
    second = job(second_seen)
    assert len(first_seen) == len(second_seen) == 2   # the callback ran at each of the 2 steps
    assert np.array_equal(first, second)
    assert not np.allclose(first, tiny.baseline)   # the wrapper changed what the compiled forward returned
    assert counter.frame_count == graphs   # two jobs, two new wrappers each: no recompile
    assert unet.forward is compiled_forward   # the wrappers are gone, the compiled forward is back

    # a new size compiles once more; the first size still has its graph
    wide = run(tiny.compiled, WIDE_NOISE)
    np.testing.assert_allclose(wide, run(tiny.eager, WIDE_NOISE), rtol=1e-4, atol=1e-5)
    assert counter.frame_count == graphs + 1
    run(tiny.compiled)
    assert counter.frame_count == graphs + 1


def test_a_lora_added_and_removed_is_never_served_by_a_stale_graph(tiny, counter, tmp_path):
    tiny_loras.write_lora(tiny_loras.kohya_lora(tiny.model, seed=3), tmp_path / "detail.safetensors")
    info = lora.LoraRegistry(tmp_path).find("detail")
    cache = lora.LoraCache(max_items=4)
    compilation.apply(tiny.compiled, compilation.COMPILE, False, cuda=False, backend=counter)
    np.testing.assert_allclose(run(tiny.compiled), tiny.baseline, rtol=1e-4, atol=1e-5)
    without = counter.frame_count
    for weight in (1.0, 0.5):
        with lora.applied(tiny.eager, families.SD1, [(info, weight, weight)], cache):
            expected = run(tiny.eager)
        with lora.applied(tiny.compiled, families.SD1, [(info, weight, weight)], cache):
            assert compilation.compiled_mode(tiny.compiled.unet) == compilation.COMPILE
            got = run(tiny.compiled)
        assert not np.allclose(expected, tiny.baseline, atol=1e-4)   # the LoRA does change the image
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # A LoRA is merged into the weights and its adapter taken off before sampling: the module tree is the model's own,
    # the weights are the graph's inputs, so the compiled graph serves every LoRA and weight without recompiling.
    assert counter.frame_count == without
    np.testing.assert_allclose(run(tiny.compiled), tiny.baseline, rtol=1e-4, atol=1e-5)   # removed: the old graph
    assert counter.frame_count == without


def test_another_checkpoint_reuses_the_graphs_and_an_unloaded_model_is_freed(tiny, counter):
    """The RAM cache switches between checkpoints: one of the same architecture runs the graphs already compiled
    (with its own weights), and a compiled model that is dropped does not stay in memory."""
    compilation.apply(tiny.compiled, compilation.COMPILE, False, cuda=False, backend=counter)
    run(tiny.compiled)
    graphs = counter.frame_count
    other_model = build_tiny_model("sd1", seed=1)
    other = build_pipeline(other_model)
    expected = run(other)
    compilation.apply(other, compilation.COMPILE, False, cuda=False, backend=counter)
    np.testing.assert_allclose(run(other), expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(expected, tiny.baseline, atol=1e-3)   # really other weights
    assert counter.frame_count == graphs
    unet = weakref.ref(other.unet)
    del other
    gc.collect()
    assert unet() is None


def test_compiled_forward_under_accelerate_offload_hook(tiny, counter):
    """--medvram puts accelerate's hook on the UNet for a job, over whatever forward is in place."""
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    unet = tiny.compiled.unet
    compilation.apply(tiny.compiled, compilation.COMPILE, False, cuda=False, memory=MEDVRAM, backend=counter)
    installed = unet.__dict__["forward"]
    add_hook_to_module(unet, ModelHook())
    compilation.apply(tiny.compiled, compilation.COMPILE, False, cuda=False, memory=MEDVRAM, backend=counter)
    assert unet._old_forward is installed   # a nested job's apply changes nothing under the hook
    np.testing.assert_allclose(run(tiny.compiled), tiny.baseline, rtol=1e-4, atol=1e-5)
    assert counter.frame_count == 1
    compilation.apply(tiny.compiled, compilation.NONE, False, cuda=False, memory=MEDVRAM, backend=counter)
    assert compilation.compiled_mode(unet) == compilation.NONE   # turned off under the hook: the class's forward
    assert np.array_equal(run(tiny.compiled), tiny.baseline)
    remove_hook_from_module(unet)
    assert unet.forward.__func__ is type(unet).forward and compilation.compiled_mode(unet) == compilation.NONE
    assert np.array_equal(run(tiny.compiled), tiny.baseline)


def test_the_cuda_graphs_forward_and_one_graph_for_both_calling_conventions(tiny, counter):
    """The forward "torch.compile + CUDA graphs" installs on CUDA (forced here, on the CPU, where no replay can
    overwrite an output: the copies it hands out cannot be checked) gives the UNet's prediction, and a call by
    position (the per-job wrappers) and one by keyword (diffusers' pipelines) share one graph."""
    unet = tiny.compiled.unet
    compilation._set(unet, compilation.CUDA_GRAPHS, counter)
    assert compilation.compiled_mode(unet) == compilation.CUDA_GRAPHS
    sample, timestep, text = torch.randn(1, 4, 8, 8), torch.tensor(500.0), torch.randn(1, 77, 32)
    with torch.no_grad():
        expected = type(unet).forward(unet, sample, timestep, text).sample
        first = unet(sample, timestep, text, return_dict=False)
        second = unet(sample, timestep, encoder_hidden_states=text, return_dict=False)
    assert isinstance(first, tuple) and torch.equal(first[0], second[0])
    torch.testing.assert_close(first[0], expected, rtol=1e-4, atol=1e-5)
    assert counter.frame_count == 1   # by position or by keyword: one graph
    compilation.apply(tiny.compiled, compilation.CUDA_GRAPHS, False, cuda=False, backend=counter)   # no CUDA here
    assert compilation.compiled_mode(unet) == compilation.COMPILE


def test_modes_fit_the_device_and_memory_mode(caplog):
    effective = compilation.effective_mode
    assert effective(compilation.CUDA_GRAPHS, cuda=True) == compilation.CUDA_GRAPHS
    assert effective(compilation.COMPILE, cuda=False) == compilation.COMPILE
    assert effective(compilation.CUDA_GRAPHS, cuda=True, memory=MEDVRAM) == compilation.COMPILE
    assert effective(compilation.CUDA_GRAPHS, cuda=True, memory=LOWVRAM) == compilation.NONE
    assert effective(compilation.NONE, cuda=True, memory=FULL) == compilation.NONE
    assert effective("max-autotune", cuda=True) == compilation.NONE   # an unknown value never reaches torch
    compilation._logged.clear()
    with caplog.at_level(logging.INFO, logger="modules.diffusion.compilation"):
        for _ in range(3):
            assert effective(compilation.CUDA_GRAPHS, cuda=False) == compilation.COMPILE
    assert sum("CUDA graphs need a CUDA device" in record.message for record in caplog.records) == 1


CHILD = """
import json, sys, time, torch
from types import SimpleNamespace
from diffusers.models.resnet import ResnetBlock2D
from modules.diffusion import compilation
compilation.configure_cache(sys.argv[1])
torch.manual_seed(0)
block = ResnetBlock2D(in_channels=32, out_channels=32, temb_channels=64, groups=8).eval()
x, temb = torch.randn(2, 32, 16, 16), torch.randn(2, 64)
with torch.no_grad():
    expected = block(x, temb)
    compilation.apply(SimpleNamespace(unet=block), sys.argv[2], False, cuda=False)
    start = time.perf_counter()
    got = block(x, temb)
    seconds = time.perf_counter() - start
from torch._dynamo.utils import counters
print(json.dumps({"seconds": seconds, "max_diff": (got - expected).abs().max().item(),
                  "compiled": compilation.compiled_mode(block), **counters["inductor"]}))
"""


def compile_in_a_fresh_process(cache: Path, mode: str) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    done = subprocess.run([sys.executable, "-c", CHILD, str(cache), mode], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_inductor_output_matches_and_a_restart_reuses_the_compiled_code(tmp_path):
    cache = tmp_path / "cache" / "torch-compile"
    cold = compile_in_a_fresh_process(cache, compilation.CUDA_GRAPHS)   # no CUDA here: plain compile
    assert cold["compiled"] == compilation.COMPILE
    assert cold["max_diff"] < 1e-4
    assert cold.get("fxgraph_cache_miss", 0) == 1 and cold.get("fxgraph_cache_hit", 0) == 0
    assert any((cache / "fxgraph").iterdir())   # the compiled code is under the data dir, not /tmp
    warm = compile_in_a_fresh_process(cache, compilation.CUDA_GRAPHS)
    assert warm["max_diff"] < 1e-4
    assert warm.get("fxgraph_cache_hit", 0) == 1 and warm.get("fxgraph_cache_miss", 0) == 0
    print(f"first compile {cold['seconds']:.1f} s, after a restart {warm['seconds']:.1f} s")


def test_the_compile_setting_reaches_generation_and_keeps_the_image(tmp_path, monkeypatch):
    """Through the job path (services, the API's request validator, ControlNet-free txt2img): with compile_unet set
    the job's UNet forward is the compiled one, the graphs are really used, and the image is the uncompiled one."""
    from torch._dynamo.testing import CompileCounterWithBackend

    from modules import cmd_args, services as services_module
    from modules.generation.request import validate_request
    from tests.fixtures.data_dirs import data_dir_with_checkpoints

    counter = CompileCounterWithBackend("eager")   # dynamo's capture and guards, without inductor's minutes on CPU
    real_apply = compilation.apply
    monkeypatch.setattr(compilation, "apply",
                        lambda *args, **kwargs: real_apply(*args, **{**kwargs, "backend": counter}))
    torch._dynamo.reset()
    data = data_dir_with_checkpoints(tmp_path, {"tiny-sd1.safetensors": build_tiny_model("sd1")})
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start"]))
    try:
        def image():
            request = validate_request({"prompt": "a cat", "steps": 3, "width": 64, "height": 64, "seed": 3,
                                        "save_images": False}, services.registry, services.networks)
            job = services.submit_txt2img(request)
            assert job.done.wait(300) and job.state == "done", job.error
            return np.asarray(job.result.images[0], dtype=np.int16)

        plain = image()
        services.options.update({"compile_unet": compilation.COMPILE, "compile_vae": True}, from_api=False)
        compiled = image()
        pipe = services.models.current.pipeline
        assert compilation.compiled_mode(pipe.unet) == compilation.COMPILE
        assert compilation.compiled_mode(pipe.vae.decoder) == compilation.COMPILE
        assert counter.frame_count >= 2   # the UNet's graph and the decoder's were captured and run
        assert np.abs(compiled - plain).max() <= 1
        services.options.update({"compile_unet": compilation.NONE}, from_api=False)
        assert np.array_equal(image(), plain)
        assert compilation.compiled_mode(pipe.unet) == compilation.NONE
    finally:
        services.shutdown()
        torch._dynamo.reset()
