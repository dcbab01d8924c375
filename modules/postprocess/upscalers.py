"""A1111's upscaler list: latent modes for hires fix, Lanczos/Nearest, and model upscalers run with spandrel.

Model files come from models/ESRGAN, RealESRGAN, DAT, HAT, SwinIR and ScuNET (sub-folders too); each file is
one entry named by its stem, as A1111 shows them. Files are read through modules.models.files (safetensors or
weights-only pickles), and spandrel recognises the architecture from the state dict's keys and shapes.
"""
from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:   # spandrel is imported when the first model runs: it takes seconds
    import spandrel

from modules.models import files

log = logging.getLogger(__name__)

# A1111 `shared.latent_upscale_modes`: name → (torch.nn.functional.interpolate mode, antialias).
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}

MODEL_FOLDERS = ("ESRGAN", "RealESRGAN", "DAT", "HAT", "SwinIR", "ScuNET")
MODEL_EXTENSIONS = (".pth", ".pt", ".safetensors", ".ckpt")
BUILTIN = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
MAX_PASSES = 3          # A1111 runs a model at most three times to reach the target size
CACHED_MODELS = 2       # upscaler 1 and 2 of the Extras tab


class UpscalerError(ValueError):
    """An upscaler that cannot be used; the message names the file and the reason."""


def upscale_latents(latents: torch.Tensor, height: int, width: int, mode_name: str) -> torch.Tensor:
    """(B, C, h, w) latents → (B, C, height, width) with the named latent mode's interpolation."""
    try:
        mode, antialias = LATENT_MODES[mode_name]
    except KeyError:
        raise ValueError(f"unknown latent upscale mode {mode_name!r}; use one of {list(LATENT_MODES)}") from None
    # Interpolation in fp16 is missing or slow on CPU; computing in fp32 costs nothing on a GPU.
    resized = torch.nn.functional.interpolate(latents.float(), size=(height, width), mode=mode, antialias=antialias)
    return resized.to(latents.dtype)


def latent_api_list() -> list[dict]:
    """/sdapi/v1/latent-upscale-modes."""
    return [{"name": name} for name in LATENT_MODES]


def _registry() -> spandrel.ArchRegistry:
    """spandrel's architectures plus the extra ones (CodeFormer, SRFormer, ...), in a private copy so
    spandrel's global registry is never changed."""
    import spandrel

    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            import spandrel_extra_arches

            registry = spandrel.MAIN_REGISTRY.copy()
            registry.add(*spandrel_extra_arches.EXTRA_REGISTRY, ignore_duplicates=True)
            _REGISTRY = registry
        return _REGISTRY


_REGISTRY: spandrel.ArchRegistry | None = None
_REGISTRY_LOCK = threading.Lock()


def load_descriptor(path: Path, device: torch.device, dtype: torch.dtype) -> spandrel.ModelDescriptor:
    """A spandrel model from a file read safely, on `device`, in `dtype` when the architecture supports it
    (else fp32). Raises UpscalerError naming the file and the reason. Shared with face restoration."""
    import spandrel

    try:
        data = files.load_object(path)
    except files.ModelFileError as error:
        raise UpscalerError(str(error)) from None
    if not isinstance(data, dict):
        raise UpscalerError(f"{path.name}: does not contain a state dict")
    state_dict = {k: v for k, v in spandrel.canonicalize_state_dict(data).items() if isinstance(v, torch.Tensor)}
    if not state_dict:
        raise UpscalerError(f"{path.name}: contains no weights")
    try:
        descriptor = spandrel.ModelLoader(registry=_registry()).load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError:
        raise UpscalerError(f"{path.name}: not a model architecture spandrel knows "
                            "(ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, ...)") from None
    except Exception as error:  # noqa: BLE001 - a known architecture whose weights do not fit it
        raise UpscalerError(f"{path.name}: the weights do not match the {type(error).__name__} "
                            f"architecture spandrel detected ({error})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UpscalerError(f"{path.name}: is a {descriptor.purpose} model, not an image-to-image model")
    if dtype == torch.float16 and not descriptor.supports_half:
        dtype = torch.float32
    elif dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        dtype = torch.float32
    return descriptor.to(device).to(dtype).eval()


def image_to_tensor(image: Image.Image, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """PIL (RGB or L) → (1, C, H, W) in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=dtype)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """(1, C, H, W) in [0, 1] → PIL RGB (or L for one channel)."""
    array = (tensor[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


@dataclass(frozen=True)
class _ModelFile:
    name: str
    path: Path
    folder: str


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(length: int, fade: int) -> torch.Tensor:
    """Blend weights along one tile side: rising over `fade` pixels at each end, never zero."""
    weights = torch.ones(length)
    fade = min(fade, length // 2)
    if fade > 0:
        rise = (torch.arange(fade, dtype=torch.float32) + 1) / (fade + 1)
        weights[:fade] = rise
        weights[-fade:] = rise.flip(0)
    return weights


class Upscalers:
    """The upscaler list and running upscalers; loaded models are cached (the last two used)."""

    def __init__(self, models_root: Path, device: torch.device, dtype: torch.dtype, options):
        self.models_root = Path(models_root)
        self.device = device
        self.dtype = dtype
        self.options = options        # reads ESRGAN_tile and ESRGAN_tile_overlap at each upscale
        self._lock = threading.RLock()
        self._files: dict[str, _ModelFile] = {}
        self._cache: collections.OrderedDict[Path, spandrel.ImageModelDescriptor] = collections.OrderedDict()
        self._scales: dict[Path, int] = {}
        self.refresh()

    # ------------------------------------------------------------- the list

    def refresh(self) -> None:
        """Rescan the model folders; models whose files are gone leave the cache."""
        found: dict[str, _ModelFile] = {}
        for folder in MODEL_FOLDERS:
            root = self.models_root / folder
            if not root.is_dir():
                continue
            paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in MODEL_EXTENSIONS and p.is_file())
            for path in paths:
                name = path.stem
                if name in found or name in BUILTIN or name in LATENT_MODES:
                    # Two files with one stem: the later one is told apart by its folder.
                    name = f"{path.stem} ({path.parent.relative_to(self.models_root).as_posix()})"
                found.setdefault(name, _ModelFile(name, path, folder))
        with self._lock:
            self._files = found
            known = {entry.path for entry in found.values()}
            for path in [p for p in self._cache if p not in known]:
                del self._cache[path]

    def names(self) -> list[str]:
        with self._lock:
            return [*BUILTIN, *self._files]

    def hires_choices(self) -> list[str]:
        return [*LATENT_MODES, *(name for name in self.names() if name != "None")]

    def find(self, name: str) -> str | None:
        """The canonical name for a user's spelling: any case, or the file name with its extension."""
        if not isinstance(name, str):
            return None
        wanted = name.strip().lower()
        for candidate in [*LATENT_MODES, *self.names()]:
            if candidate.lower() == wanted:
                return candidate
        with self._lock:
            for entry in self._files.values():
                if entry.path.name.lower() == wanted:
                    return entry.name
        return None

    def is_latent(self, name: str) -> bool:
        return name in LATENT_MODES

    def api_list(self) -> list[dict]:
        """/sdapi/v1/upscalers items (A1111 reports scale 4 for the built-in ones)."""
        items = [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
                 for name in BUILTIN]
        with self._lock:
            for entry in self._files.values():
                items.append({"name": entry.name, "model_name": entry.folder, "model_path": str(entry.path),
                              "model_url": None, "scale": self._scales.get(entry.path)})
        return items

    # ------------------------------------------------------------- upscaling

    def upscale(self, image: Image.Image, scale: float, name: str, job=None) -> Image.Image:
        """`image` scaled by `scale` to exactly (round(w·scale), round(h·scale)); "None" returns it unchanged.

        A model runs tile by tile, up to three passes while the image is smaller than the target, and the
        result is resized to the exact size with Lanczos. When `job` is interrupted the remaining tiles and
        passes are skipped and the image is finished with Lanczos, so the caller still gets the size it
        asked for; callers check `job.interrupted` themselves.
        """
        canonical = self.find(name)
        if canonical is None or self.is_latent(canonical):
            raise UpscalerError(f"unknown upscaler {name!r}; use one of {self.names()}")
        if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
            raise UpscalerError(f"upscale factor must be a positive number, got {scale!r}")
        if canonical == "None":
            return image
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if canonical in BUILTIN:
            return image.resize(target, resample=BUILTIN[canonical])

        with self._lock:
            entry = self._files[canonical]
            model = self._model(entry.path)
        if job is not None:
            job.textinfo = f"Upscaling with {canonical}"
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        current = image.convert("L" if model.input_channels == 1 else "RGB")
        for _ in range(MAX_PASSES):
            if current.width >= target[0] and current.height >= target[1]:
                break
            before = current.size
            current = self._run_tiled(model, current, job)
            if current.size == before or (job is not None and job.interrupted):
                break
        if current.mode != image.mode and image.mode in ("RGB", "RGBA", "L", "LA"):
            current = current.convert("L" if image.mode in ("L", "LA") else "RGB")
        if current.size != target:
            current = current.resize(target, resample=Image.Resampling.LANCZOS)
        if alpha is not None:   # models see RGB; transparency is scaled alongside
            current.putalpha(alpha.resize(target, resample=Image.Resampling.LANCZOS))
        return current

    def _model(self, path: Path) -> spandrel.ImageModelDescriptor:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        descriptor = load_descriptor(path, self.device, self.dtype)
        if descriptor.input_channels not in (1, 3):
            raise UpscalerError(f"{path.name}: takes {descriptor.input_channels}-channel images; only RGB and greyscale "
                                "upscalers are supported")
        self._cache[path] = descriptor
        self._scales[path] = descriptor.scale
        while len(self._cache) > CACHED_MODELS:
            self._cache.popitem(last=False)
        return descriptor

    def _run_tiled(self, model: spandrel.ImageModelDescriptor, image: Image.Image, job) -> Image.Image:
        """One model pass over `image`, in overlapping tiles blended with feathered weights."""
        import spandrel

        tile = int(self.options.ESRGAN_tile)
        overlap = int(self.options.ESRGAN_tile_overlap)
        source = image_to_tensor(image, model.device, model.dtype)
        _, channels, height, width = source.shape
        if tile <= 0 or model.tiling == spandrel.ModelTiling.INTERNAL or (height <= tile and width <= tile):
            with torch.inference_mode():
                return tensor_to_image(model(source))

        overlap = max(0, min(overlap, tile // 2 - 1))
        stride = tile - overlap
        rows, cols = _tile_starts(height, tile, stride), _tile_starts(width, tile, stride)
        scale = model.scale
        out = torch.zeros(1, model.output_channels, height * scale, width * scale)
        weight = torch.zeros(1, 1, height * scale, width * scale)
        done, total = 0, len(rows) * len(cols)
        with torch.inference_mode():
            for top in rows:
                for left in cols:
                    if job is not None and job.interrupted:
                        return image
                    patch = source[:, :, top:top + tile, left:left + tile]
                    result = model(patch).float().cpu()
                    h, w = result.shape[-2:]
                    mask = (_ramp(h, overlap * scale)[:, None] * _ramp(w, overlap * scale)[None, :])[None, None]
                    y, x = top * scale, left * scale
                    out[:, :, y:y + h, x:x + w] += result * mask
                    weight[:, :, y:y + h, x:x + w] += mask
                    done += 1
                    if job is not None:
                        job.set_progress(done, total)
        return tensor_to_image(out / weight)
