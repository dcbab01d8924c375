"""Live previews while sampling, by A1111's `show_progress_type`.

"TAESD" decodes the step's latents with the tiny autoencoder's decoder (madebyollin's TAESD / TAESDXL,
diffusers' `DecoderTiny`) when its weights are in `models/VAE-taesd` — a recognisable full-size picture for
a few milliseconds; without them it falls back to "Approx cheap", a fixed linear map of the latent channels
to RGB (one pixel per latent, 1/8 of the size). "Full" decodes with the checkpoint's own VAE (slow).
"Approx NN" (A1111's downloaded VAE-approx network) is not available and means "Approx cheap" here.

The files are A1111's names: `taesd_decoder.pth` (SD 1.x/2.x) and `taesdxl_decoder.pth` (SDXL), in the
original layout (`1.weight`, `3.conv.0.weight`, ...) or diffusers' (`decoder.layers.0.weight`, ...), as
.pth/.pt (read weights-only) or .safetensors.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from modules.jobs import Deferred
from modules.models import files
from modules.models.families import Family

log = logging.getLogger(__name__)

METHODS = ("Approx cheap", "Approx NN", "TAESD", "Full")
DECODER_NAMES = {"sd": "taesd_decoder", "sdxl": "taesdxl_decoder"}
SUFFIXES = (".safetensors", ".pth", ".pt")

# Cheap latent → RGB previews (A1111's "Approx cheap" coefficients).
_PREVIEW_COEFFICIENTS = {
    "sd": torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264],
                        [-0.184, -0.271, -0.473]]),
    "sdxl": torch.tensor([[0.3448, 0.4168, 0.4395], [-0.1953, -0.0290, 0.0250], [0.1074, 0.0886, -0.0163],
                          [-0.3730, -0.2499, -0.2088]]),
}
_ORIGINAL_KEY = re.compile(r"^(\d+)\.(.*)$")


def latent_preview(latent: torch.Tensor, family: Family) -> Image.Image:
    """'Approx cheap': one latent (C, H, W) → an RGB image of H×W."""
    coefficients = _PREVIEW_COEFFICIENTS[_kind(family)]
    rgb = torch.einsum("lhw,lr->hwr", latent[:4].float().cpu(), coefficients)
    array = ((rgb + 1) * 127.5).clamp(0, 255).byte().numpy()
    return Image.fromarray(array)


def deferred(render: Callable[[torch.Tensor], Image.Image], latents: torch.Tensor) -> Deferred:
    """A preview of the first image of `latents`, made by `render(latent)` only when somebody asks (see
    jobs.Deferred). The latent is copied on its device, so the sampler's later steps cannot change it; when the
    job ends it moves to RAM (the job's work is done by then: nothing waits for it)."""
    held = [latents[:1].detach().clone()]

    def release() -> None:
        held[0] = held[0].cpu()

    return Deferred(lambda: render(held[0]), release)


def _kind(family: Family) -> str:
    return "sdxl" if family.xl else "sd"   # SDXL's latent space is its own; SD 1.x and 2.x share theirs


def new_decoder() -> torch.nn.Module:
    """TAESD's decoder: diffusers' DecoderTiny with AutoencoderTiny's defaults (1.2 M parameters)."""
    from diffusers.models.autoencoders.vae import DecoderTiny

    return DecoderTiny(in_channels=4, out_channels=3, num_blocks=(3, 3, 3, 1), block_out_channels=(64, 64, 64, 64),
                       upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest")


def to_decoder_layout(state_dict: dict) -> dict:
    """A TAESD decoder's tensors under DecoderTiny's names, from either layout. The original is an
    nn.Sequential whose first module is a parameterless Clamp, so its indices are one ahead of DecoderTiny's
    `layers` (which clamps in forward())."""
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("decoder.layers."):          # a whole diffusers AutoencoderTiny
            converted[key.removeprefix("decoder.")] = value
        elif key.startswith("layers."):                # a diffusers DecoderTiny
            converted[key] = value
        elif match := _ORIGINAL_KEY.match(key):        # madebyollin's taesd_decoder.pth
            converted[f"layers.{int(match[1]) - 1}.{match[2]}"] = value
    return converted


class Previews:
    """Makes the preview images; TAESD decoders are loaded on first use and kept (a few MB each)."""

    def __init__(self, folder: Path, device: torch.device, dtype: torch.dtype):
        self.folder = folder
        self.device = device
        self.dtype = dtype if device.type == "cuda" else torch.float32
        self._decoders: dict[str, torch.nn.Module | None] = {}   # None: no usable file (fall back)
        self._lock = threading.Lock()

    def image(self, latents: torch.Tensor, family: Family, method: str, pipeline=None) -> Image.Image:
        """The preview of the first image of a batch of latents (in the UNet's scaled latent space)."""
        latent = latents[:1]
        if method == "Full" and pipeline is not None:
            return self._full(latent, pipeline)
        if method == "TAESD":
            decoder = self.decoder(family)
            if decoder is not None:
                with torch.no_grad():
                    pixels = decoder(latent.to(self.device, self.dtype))
                return _to_image(pixels)
        return latent_preview(latent[0], family)

    def decoder(self, family: Family) -> torch.nn.Module | None:
        kind = _kind(family)
        with self._lock:
            if kind not in self._decoders:
                self._decoders[kind] = self._load(kind)
            return self._decoders[kind]

    def _load(self, kind: str) -> torch.nn.Module | None:
        path = next((self.folder / f"{DECODER_NAMES[kind]}{suffix}" for suffix in SUFFIXES
                     if (self.folder / f"{DECODER_NAMES[kind]}{suffix}").is_file()), None)
        if path is None:
            return None
        decoder = new_decoder()
        try:
            decoder.load_state_dict(to_decoder_layout(files.load_state_dict(path)))
        except (files.ModelFileError, RuntimeError) as error:   # unreadable, unsafe, or not a TAESD decoder
            log.warning("%s is not a usable TAESD decoder (%s); previews use the latent approximation", path.name,
                        str(error).splitlines()[0])
            return None
        log.info("Live previews with %s", path.name)
        return decoder.to(self.device, self.dtype).eval()

    @staticmethod
    def _full(latent: torch.Tensor, pipeline) -> Image.Image:
        vae = pipeline.vae
        with torch.no_grad():
            pixels = vae.decode(latent.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample
        return _to_image(pixels)


def _to_image(pixels: torch.Tensor) -> Image.Image:
    """A decoded (1, 3, H, W) batch in [-1, 1] → PIL."""
    array = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)
