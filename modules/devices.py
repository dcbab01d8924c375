"""Which device and dtype models run on, chosen once from the flags and the hardware."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

# Where a model's weights live while it generates (A1111's --medvram / --lowvram), see modules/models/placement.py.
FULL, MEDVRAM, LOWVRAM = "full", "medvram", "lowvram"


@dataclass(frozen=True)
class DeviceConfig:
    device: torch.device
    dtype: torch.dtype          # UNet and text encoders
    vae_dtype: torch.dtype
    attention: str              # "sdp" or "xformers"
    nan_check: bool             # re-run the VAE in fp32 when it returns NaNs
    memory: str = FULL          # FULL, MEDVRAM or LOWVRAM
    medvram_sdxl: bool = False  # MEDVRAM for SDXL models only
    channels_last: bool = False
    attention_slicing: bool = False   # A1111's split / sub-quadratic attention flags
    bf16_sdxl_vae: bool = False       # the GPU computes in bf16 (see vae_dtype_for)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def memory_for(self, family) -> str:
        """The memory mode for a model of `family` (a models.families.Family): --medvram-sdxl for SDXL ones."""
        if self.memory == FULL and self.medvram_sdxl and family.xl:
            return MEDVRAM
        return self.memory

    def vae_dtype_for(self, family) -> torch.dtype:
        """The VAE's dtype for a model family. SDXL's VAE overflows fp16 (A1111's "A tensor with all NaNs was
        produced in VAE": a wasted decode, then the VAE kept in fp32, twice the memory and time). bf16 has fp32's
        range, so on a GPU that computes in bf16 an fp16 SDXL VAE runs in bf16 instead, as ComfyUI does: no
        overflow and half fp32's memory, at a precision below what an 8-bit image shows. SD 1.x/2.x VAEs keep fp16."""
        if self.vae_dtype == torch.float16 and self.bf16_sdxl_vae and family.xl:
            return torch.bfloat16
        return self.vae_dtype

    def describe(self) -> str:
        memory = "" if self.memory == FULL and not self.medvram_sdxl else \
            f", memory: {self.memory}{' (medvram for SDXL)' if self.medvram_sdxl else ''}"
        return f"{self.device} ({str(self.dtype).removeprefix('torch.')}, attention: {self.attention}{memory})"


def from_args(args) -> DeviceConfig:
    use_cpu = "all" in args.use_cpu or "sd" in args.use_cpu
    slicing = not args.disable_opt_split_attention and any(
        (args.opt_split_attention, args.opt_split_attention_v1, args.opt_split_attention_invokeai,
         args.opt_sub_quad_attention))
    if torch.cuda.is_available() and not use_cpu:
        device = torch.device(f"cuda:{args.device_id}" if args.device_id else "cuda")
        if args.no_half or args.precision == "full":
            dtype = torch.float32
        elif args.precision == "bf16":
            dtype = torch.bfloat16
        else:
            dtype = torch.float16
        vae_dtype = torch.float32 if args.no_half_vae else dtype
        wants_xformers = args.xformers or args.force_enable_xformers or args.xformers_flash_attention
        attention = "xformers" if wants_xformers and _xformers_available() else "sdp"
        if args.opt_sdp_no_mem_attention:
            torch.backends.cuda.enable_mem_efficient_sdp(False)
        configure_cuda_backends()
        memory = LOWVRAM if args.lowvram else MEDVRAM if args.medvram else FULL
        return DeviceConfig(device, dtype, vae_dtype, attention, nan_check=not args.disable_nan_check,
                            memory=memory, medvram_sdxl=args.medvram_sdxl, channels_last=args.opt_channelslast,
                            attention_slicing=slicing,
                            bf16_sdxl_vae=torch.cuda.is_bf16_supported(including_emulation=False))
    if args.lowvram or args.medvram or args.medvram_sdxl:
        log.info("--medvram / --lowvram have no effect on the CPU: every model is in RAM already")
    # CPU: half precision is slow or unsupported for many CPU kernels, so always fp32.
    return DeviceConfig(torch.device("cpu"), torch.float32, torch.float32, "sdp", nan_check=False,
                        channels_last=args.opt_channelslast, attention_slicing=slicing)


def configure_cuda_backends() -> None:
    """Matmul and convolution settings, chosen once at start.

    TF32 for fp32 matmuls and convolutions (A1111 does the same): only what runs in fp32 uses it (the VAE with
    --no-half-vae, everything with --no-half), at about 3x the speed of strict fp32 and well inside what an 8-bit
    image shows. fp16 matmuls keep PyTorch's default reduced-precision reduction, which is what diffusers is measured
    with. cudnn.benchmark stays off: it autotunes every new image size on first use (a slow first image per size),
    and the benchmark (tools/benchmark.py) is where turning it on must first prove itself.
    """
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def input_device(module: torch.nn.Module) -> torch.device:
    """Where to put a module's inputs: beside its weights, or in RAM when the weights are meta tensors under
    --lowvram's sequential offload (whose hooks move inputs to the GPU themselves)."""
    device = next(module.parameters()).device
    return torch.device("cpu") if device.type == "meta" else device


def _xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return True


def memory_stats(device: torch.device) -> dict:
    """The /sdapi/v1/memory figures: RAM, and CUDA if present."""
    import psutil

    vm = psutil.virtual_memory()
    stats: dict = {"ram": {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        info = torch.cuda.memory_stats(device)
        stats["cuda"] = {
            "system": {"free": free, "used": total - free, "total": total},
            "active": {"current": info.get("active_bytes.all.current", 0), "peak": info.get("active_bytes.all.peak", 0)},
            "allocated": {"current": info.get("allocated_bytes.all.current", 0),
                          "peak": info.get("allocated_bytes.all.peak", 0)},
            "reserved": {"current": info.get("reserved_bytes.all.current", 0),
                         "peak": info.get("reserved_bytes.all.peak", 0)},
            "inactive": {"current": info.get("inactive_split_bytes.all.current", 0),
                         "peak": info.get("inactive_split_bytes.all.peak", 0)},
            "events": {"retries": info.get("num_alloc_retries", 0), "oom": info.get("num_ooms", 0)},
        }
    else:
        stats["cuda"] = {"error": "no CUDA device"}
    return stats


# ---------------------------------------------------------------- A1111's `modules.devices` for extensions

cpu = torch.device("cpu")
_running: DeviceConfig | None = None   # the server's configuration, once it has started (shared.bind)


def bind_for_extensions(config: DeviceConfig) -> None:
    global _running
    _running = config


def __getattr__(name: str):
    # A1111's module attributes that follow the running server (PEP 562): device, dtype, dtype_vae, dtype_unet.
    config = _running
    if name in ("device", "dtype", "dtype_vae", "dtype_unet", "dtype_inference"):
        if config is None:
            raise AttributeError(f"modules.devices.{name} is read before the web UI has started")
        return {"device": config.device, "dtype": config.dtype, "dtype_vae": config.vae_dtype,
                "dtype_unet": config.dtype, "dtype_inference": config.dtype}[name]
    from modules.addons.missing_names import missing_name

    raise missing_name("modules.devices", name)


def get_optimal_device() -> torch.device:
    return _running.device if _running is not None else cpu


def get_device_for(task: str) -> torch.device:
    """A1111: the device for a task ("sd", "interrogate", ...); here every task runs on the one device."""
    return get_optimal_device()


def torch_gc() -> None:
    """Free what Python and CUDA's cache hold (A1111's torch_gc)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def autocast(disable: bool = False):
    """A1111's autocast(): mixed precision on CUDA when the models run in half precision, else nothing."""
    import contextlib

    config = _running
    if disable or config is None or not config.is_cuda or config.dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=config.dtype)


def without_autocast(disable: bool = False):
    import contextlib

    return torch.autocast("cuda", enabled=False) if torch.is_autocast_enabled() and not disable \
        else contextlib.nullcontext()


class NansException(Exception):
    """A1111's: a tensor came out all NaN (extensions catch it around their own generations)."""


def test_for_nans(x: torch.Tensor, where: str) -> None:
    """A1111's check, raising NansException when `x` is all NaN (`where`: "unet" or "vae", named in the message)."""
    if torch.all(torch.isnan(x)).item():
        raise NansException(f"A tensor with all NaNs was produced in {where}.")
