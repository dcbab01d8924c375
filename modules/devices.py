"""Which device and dtype models run on, chosen once from the flags and the hardware."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceConfig:
    device: torch.device
    dtype: torch.dtype          # UNet and text encoders
    vae_dtype: torch.dtype
    attention: str              # "sdp" or "xformers"
    nan_check: bool             # re-run the VAE in fp32 when it returns NaNs

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> str:
        return f"{self.device} ({str(self.dtype).removeprefix('torch.')}, attention: {self.attention})"


def from_args(args) -> DeviceConfig:
    use_cpu = "all" in args.use_cpu or "sd" in args.use_cpu
    if torch.cuda.is_available() and not use_cpu:
        device = torch.device(f"cuda:{args.device_id}" if args.device_id else "cuda")
        if args.no_half or args.precision == "full":
            dtype = torch.float32
        elif args.precision == "bf16":
            dtype = torch.bfloat16
        else:
            dtype = torch.float16
        vae_dtype = torch.float32 if args.no_half_vae else dtype
        attention = "xformers" if args.xformers and _xformers_available() else "sdp"
        if args.opt_sdp_no_mem_attention:
            torch.backends.cuda.enable_mem_efficient_sdp(False)
        return DeviceConfig(device, dtype, vae_dtype, attention, nan_check=not args.disable_nan_check)
    # CPU: half precision is slow or unsupported for many CPU kernels, so always fp32.
    return DeviceConfig(torch.device("cpu"), torch.float32, torch.float32, "sdp", nan_check=False)


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
        }
    else:
        stats["cuda"] = {"error": "no CUDA device"}
    return stats
