"""The warm-up generation after a load job: it runs the real generation path at the model's native size for every
family (on the CPU here; the server only runs it on CUDA), and a load job on the CPU does not run it."""
from __future__ import annotations

import pytest
import torch

from modules import cmd_args, services as services_module
from modules.diffusion import warmup
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model

FAMILIES = ("sd1", "sd2", "sdxl", "sd1_inpaint", "sdxl_refiner")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    data = data_dir_with_checkpoints(tmp_path_factory.mktemp("warm"),
                                     {f"tiny-{family}.safetensors": build_tiny_model(family) for family in FAMILIES})
    built = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start"]))
    built.options.update({"sd_checkpoints_limit": 8})
    yield built
    built.shutdown()


@pytest.mark.parametrize("family, size", [("sd1", 512), ("sd2", 512), ("sdxl", 1024), ("sd1_inpaint", 512)])
def test_warm_up_runs_the_generation_path_at_the_native_size(services, family, size, monkeypatch):
    model = services.models.get(f"tiny-{family}")
    assert warmup.native_size(model) == size
    decoded = []
    real_decode = warmup.sampling.decode
    monkeypatch.setattr(warmup.sampling, "decode", lambda pipe, latents, **kw: decoded.append(
        real_decode(pipe, latents, **kw)[0]))
    assert warmup.warm_up(model, torch.device("cpu"), nan_check=False) > 0
    assert decoded[0].size == (size, size)


def test_a_refiner_is_not_warmed_up_and_a_load_job_on_the_cpu_does_not_warm(services, monkeypatch):
    assert warmup.warm_up(services.models.get("tiny-sdxl_refiner"), torch.device("cpu"), nan_check=False) == 0.0
    calls = []
    monkeypatch.setattr(warmup, "warm_up", lambda *args, **kwargs: calls.append(args))
    job = services.switch_model("tiny-sd1", timeout=300)
    assert job.state == "done", job.error
    assert calls == []   # CUDA only: on the CPU the first image has nothing to warm
