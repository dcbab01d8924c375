"""--medvram / --lowvram (diffusers' offloading), attention slicing and VAE tiling, and A1111's speed flags.

There is no GPU here, so the offload hooks run with the CPU as their "GPU": what this proves is that every
path of a job (LoRAs, img2img, hires fix, a refiner, a script's nested generation) runs under the hooks, gives
the same pixels as the default mode, and leaves the model as it found it (real weights in RAM, no hooks). How
much VRAM each mode saves is measured by tools/benchmark.py on a GPU.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from modules import cmd_args, devices, services as services_module
from modules.models import families, placement as placement_module
from modules.generation.request import validate_request
from tests.fixtures.app_client import app_client
from tests.fixtures.data_dirs import data_dir_with_checkpoints
from tests.fixtures.tiny_checkpoints import build_tiny_model
from tests.fixtures.tiny_controlnets import build_tiny_controlnet, write_controlnet
from tests.fixtures.tiny_loras import kohya_lora, write_lora

A1111_FLAGS = ["--medvram", "--medvram-sdxl", "--lowvram", "--lowram", "--opt-channelslast", "--upcast-sampling",
               "--opt-split-attention", "--opt-split-attention-v1", "--opt-split-attention-invokeai",
               "--opt-sub-quad-attention", "--sub-quad-q-chunk-size", "1024", "--sub-quad-kv-chunk-size", "512",
               "--sub-quad-chunk-threshold", "80", "--force-enable-xformers", "--xformers-flash-attention",
               "--disable-opt-split-attention", "--opt-sdp-attention", "--opt-sdp-no-mem-attention"]


def test_a1111_speed_and_memory_flags_are_accepted():
    """Users' COMMANDLINE_ARGS carry these; an unknown flag would stop the server from starting."""
    args = cmd_args.parse_args(A1111_FLAGS)
    assert args.medvram and args.lowvram and args.medvram_sdxl and args.sub_quad_q_chunk_size == 1024


def test_memory_mode_per_family():
    cpu = torch.device("cpu")
    sdxl_only = devices.DeviceConfig(cpu, torch.float16, torch.float16, "sdp", True, medvram_sdxl=True)
    assert sdxl_only.memory_for(families.SDXL) == devices.MEDVRAM and sdxl_only.memory_for(families.SD1) == devices.FULL
    low = devices.DeviceConfig(cpu, torch.float16, torch.float16, "sdp", True, memory=devices.LOWVRAM,
                               medvram_sdxl=True)
    assert low.memory_for(families.SDXL) == devices.LOWVRAM and low.memory_for(families.SD2) == devices.LOWVRAM
    # On the CPU everything is in RAM already: the flags change nothing.
    on_cpu = devices.from_args(cmd_args.parse_args(["--lowvram", "--use-cpu", "all"]))
    assert on_cpu.memory == devices.FULL and on_cpu.device.type == "cpu"
    sliced = devices.from_args(cmd_args.parse_args(["--opt-sub-quad-attention", "--use-cpu", "all"]))
    assert sliced.attention_slicing
    assert not devices.from_args(cmd_args.parse_args(["--opt-split-attention", "--disable-opt-split-attention",
                                                      "--use-cpu", "all"])).attention_slicing


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    sd1 = build_tiny_model("sd1")
    data_dir_with_checkpoints(root, {"tiny-sd1.safetensors": sd1, "tiny-sdxl.safetensors": build_tiny_model("sdxl"),
                                     "tiny-sdxl_refiner.safetensors": build_tiny_model("sdxl_refiner")})
    (root / "models" / "Lora").mkdir(parents=True)
    write_lora(kohya_lora(sd1, seed=3), root / "models" / "Lora" / "detail.safetensors")
    (root / "models" / "ControlNet").mkdir(parents=True)
    write_controlnet(build_tiny_controlnet("sd1"), root / "models" / "ControlNet" / "control_tiny_sd15_canny.safetensors")
    return root


def make_services(data, monkeypatch, memory: str, *flags: str):
    """Services whose device config has `memory`, with the CPU standing in for the GPU."""
    real = devices.from_args

    def cpu_as_gpu(args):
        config = real(args)
        return devices.DeviceConfig(config.device, config.dtype, config.vae_dtype, config.attention,
                                    config.nan_check, memory=memory, attention_slicing=config.attention_slicing)

    monkeypatch.setattr(devices, "from_args", cpu_as_gpu)
    return services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start",
                                                       *flags]))


REQUESTS = {
    "lora": {"prompt": "a cat <lora:detail:0.8>", "checkpoint": "tiny-sd1"},
    "hires": {"prompt": "a cat", "checkpoint": "tiny-sd1", "enable_hr": True, "hr_scale": 1.5,
              "hr_second_pass_steps": 2, "denoising_strength": 0.6},
    "refiner": {"prompt": "a cat", "checkpoint": "tiny-sdxl", "refiner_checkpoint": "tiny-sdxl_refiner",
                "refiner_switch_at": 0.5},
    "img2img": {"prompt": "a cat", "checkpoint": "tiny-sd1", "denoising_strength": 0.7},
    "controlnet": {"prompt": "a cat", "checkpoint": "tiny-sd1", "controlnet_units": [
        {"module": "canny", "model": "control_tiny_sd15_canny", "processor_res": 64}]},
}


def generate(services, name: str) -> np.ndarray:
    fields = copy.deepcopy(REQUESTS[name])
    data = {"steps": 4, "width": 64, "height": 64, "seed": 7, "save_images": False, **fields}
    photo = Image.radial_gradient("L").convert("RGB").resize((64, 64))
    if name == "img2img":
        data["init_images"] = [photo]
    for unit in data.get("controlnet_units", []):
        unit["image"] = photo
    request = validate_request(data, services.registry, services.networks, controlnet=services.controlnet)
    job = (services.submit_img2img if name == "img2img" else services.submit_txt2img)(request)
    assert job.done.wait(300) and job.state == "done", job.error
    return np.asarray(job.result.images[0].convert("RGB"), dtype=np.int16)


def unhooked_in_ram(pipeline) -> bool:
    modules = [module for module in pipeline.components.values() if isinstance(module, torch.nn.Module)]
    return all(not hasattr(m, "_hf_hook") for module in modules for m in module.modules()) and all(
        p.device.type == "cpu" for module in modules for p in module.parameters())


@pytest.fixture(scope="module")
def default_pixels(data):
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start"]))
    try:
        return {name: generate(services, name) for name in REQUESTS}
    finally:
        services.shutdown()


@pytest.mark.parametrize("memory", [devices.MEDVRAM, devices.LOWVRAM])
def test_offloaded_jobs_give_the_default_pixels_and_leave_the_model_in_ram(data, default_pixels, monkeypatch,
                                                                           memory):
    seen = []
    job_scope = placement_module.Placement.job

    def spying_job(self, *models):
        scope = job_scope(self, *models)

        class Spy:
            def __enter__(self_inner):
                scope.__enter__()
                unet = models[0].pipeline.unet
                weights = {p.device.type for p in unet.parameters()}
                seen.append((hasattr(unet, "_hf_hook"), weights, len(models)))

            def __exit__(self_inner, *exc):
                return scope.__exit__(*exc)

        return Spy()

    monkeypatch.setattr(placement_module.Placement, "job", spying_job)
    services = make_services(data, monkeypatch, memory)
    try:
        for name, expected in default_pixels.items():
            seen.clear()
            pixels = generate(services, name)
            assert np.abs(pixels - expected).max() <= 1, name
            hooked, weights, count = seen[0]
            assert hooked, f"{name}: the job ran without offload hooks"
            # Sequential offload keeps the weights as meta tensors while a job runs; model offload keeps them real.
            assert weights == ({"meta"} if memory == devices.LOWVRAM else {"cpu"}), name
            if name == "refiner":
                assert count == 2   # the refiner is offloaded too
            for model in services.models._loaded.values():
                assert unhooked_in_ram(model.pipeline), f"{name}: {model.info.name} was left hooked or on meta"
        lowvram = memory == devices.LOWVRAM
        assert services.models.current.pipeline.vae.use_tiling == lowvram   # lowvram decodes in tiles
    finally:
        services.shutdown()


def test_a_nested_job_keeps_the_outer_jobs_hooks(data, monkeypatch):
    services = make_services(data, monkeypatch, devices.MEDVRAM)
    try:
        model = services.models.get("tiny-sd1")
        placement = services.models.placement
        with placement.job(model):
            with placement.job(model):   # a script's generation inside a job
                pass
            assert hasattr(model.pipeline.unet, "_hf_hook")
        assert unhooked_in_ram(model.pipeline)
    finally:
        services.shutdown()


def test_attention_slicing_and_vae_options_follow_the_settings(data, default_pixels):
    from diffusers.models.attention_processor import AttnProcessor2_0, SlicedAttnProcessor

    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start"]))
    try:
        def processors():
            return {type(p) for p in services.models.current.pipeline.unet.attn_processors.values()}

        services.options.update({"attention_slicing": True, "vae_tiling": True, "vae_slicing": True},
                                from_api=False)
        sliced = generate(services, "lora")
        assert processors() == {SlicedAttnProcessor}
        vae = services.models.current.pipeline.vae
        assert vae.use_tiling and vae.use_slicing
        assert np.abs(sliced - default_pixels["lora"]).max() <= 1   # slicing changes memory, not the image
        services.options.update({"attention_slicing": False, "vae_tiling": False, "vae_slicing": False},
                                from_api=False)
        generate(services, "lora")
        assert processors() == {AttnProcessor2_0}
        assert not vae.use_tiling and not vae.use_slicing
    finally:
        services.shutdown()


def test_split_attention_flag_slices_attention(data):
    from diffusers.models.attention_processor import SlicedAttnProcessor

    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start",
                                                           "--opt-split-attention", "--opt-channelslast"]))
    try:
        generate(services, "lora")
        unet = services.models.current.pipeline.unet
        assert {type(p) for p in unet.attn_processors.values()} == {SlicedAttnProcessor}
        assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    finally:
        services.shutdown()


def test_memory_route_reports_real_figures_in_a1111s_shape(data, monkeypatch):
    import psutil

    from webui import create_app

    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start",
                                                           "--api", "--nowebui"]))
    with app_client(create_app(services)) as client:
        body = client.get("/sdapi/v1/memory").json()
    services.shutdown()
    assert body["ram"]["total"] == psutil.virtual_memory().total
    assert body["ram"]["used"] + body["ram"]["free"] == body["ram"]["total"]
    assert body["cuda"] == {"error": "no CUDA device"}
    # On a GPU: the caching allocator's own counters under A1111's keys (faked here: there is no GPU).
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (6 << 30, 8 << 30))
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device: {
        "active_bytes.all.current": 1, "active_bytes.all.peak": 2, "allocated_bytes.all.current": 3,
        "allocated_bytes.all.peak": 4, "reserved_bytes.all.current": 5, "reserved_bytes.all.peak": 6,
        "inactive_split_bytes.all.current": 7, "inactive_split_bytes.all.peak": 8, "num_alloc_retries": 9,
        "num_ooms": 10})
    cuda = devices.memory_stats(torch.device("cuda"))["cuda"]
    assert cuda["system"] == {"free": 6 << 30, "used": 2 << 30, "total": 8 << 30}
    assert [cuda[key]["peak"] for key in ("active", "allocated", "reserved", "inactive")] == [2, 4, 6, 8]
    assert cuda["events"] == {"retries": 9, "oom": 10}


def test_sdxl_vae_runs_in_bf16_where_fp16_would_overflow(data, monkeypatch):
    """On a GPU that computes in bf16, an fp16 setup gives SDXL's VAE bf16 (fp32's range: no NaN image and no
    fp32 retry); SD 1.x keeps its fp16 VAE, and --no-half-vae (fp32) is left alone."""
    gpu_like = devices.DeviceConfig(torch.device("cpu"), torch.float16, torch.float16, "sdp", True, bf16_sdxl_vae=True)
    assert [gpu_like.vae_dtype_for(family) for family in (families.SD1, families.SD2, families.SDXL,
                                                          families.SDXL_REFINER)] == [
        torch.float16, torch.float16, torch.bfloat16, torch.bfloat16]
    no_half_vae = devices.DeviceConfig(torch.device("cpu"), torch.float16, torch.float32, "sdp", True,
                                       bf16_sdxl_vae=True)
    assert no_half_vae.vae_dtype_for(families.SDXL) == torch.float32
    assert devices.from_args(cmd_args.parse_args(["--use-cpu", "all"])).vae_dtype_for(families.SDXL) == torch.float32

    real = devices.from_args

    def half_vae(args):   # the UNet stays fp32 (the CPU), the VAE as a GPU with bf16 would have it
        config = real(args)
        return devices.DeviceConfig(config.device, config.dtype, torch.float16, config.attention, True,
                                    bf16_sdxl_vae=True)

    monkeypatch.setattr(devices, "from_args", half_vae)
    services = services_module.create(cmd_args.parse_args(["--data-dir", str(data), "--skip-load-model-at-start"]))
    try:
        assert services.generator.load("tiny-sd1").pipeline.vae.dtype == torch.float16
        request = validate_request({"prompt": "a cat", "checkpoint": "tiny-sdxl", "steps": 2, "width": 64,
                                    "height": 64, "seed": 1, "save_images": False}, services.registry)
        job = services.submit_txt2img(request)
        assert job.done.wait(300) and job.state == "done", job.error
        assert services.models.current.pipeline.vae.dtype == torch.bfloat16
        image = np.asarray(job.result.images[0])
        assert image.shape == (64, 64, 3) and image.std() > 0
    finally:
        services.shutdown()
