"""The settings registry: every option's key, default, label, section and type, persisted to config.json.

Keys are A1111's (`modules/shared_options.py`) so `/sdapi/v1/options` clients and `override_settings`
work unchanged. Options marked `restrict_api` (output folders, filename patterns) cannot be changed
over the API, as in A1111, because a writable output path is a file-write primitive.
"""
from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.json_file import read_json_object, write_json_atomically


@dataclass(frozen=True)
class OptionInfo:
    default: Any
    label: str
    section: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    restrict_api: bool = False

    def validate(self, key: str, value: Any) -> Any:
        """Return the value coerced to the option's type, or raise ValueError naming the key."""
        kind = type(self.default)
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{key}: expected true or false, got {value!r}")
        elif kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{key}: must be a finite number")
            if kind is int and value != int(value):
                raise ValueError(f"{key}: expected an integer, got {value!r}")
            value = kind(value)
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{key}: must be at least {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{key}: must be at most {self.maximum}")
        elif kind is str:
            if not isinstance(value, str):
                raise ValueError(f"{key}: expected a string, got {value!r}")
        elif kind is dict:
            if not isinstance(value, dict):
                raise ValueError(f"{key}: expected an object, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{key}: must be one of {list(self.choices)}")
        return value


OPTIONS: dict[str, OptionInfo] = {
    # Stable Diffusion
    "sd_model_checkpoint": OptionInfo("", "Stable Diffusion checkpoint", "sd"),
    "sd_checkpoints_limit": OptionInfo(2, "Maximum number of checkpoints loaded at the same time", "sd",
                                       minimum=1, maximum=10),
    "sd_checkpoints_keep_in_cpu": OptionInfo(True, "Only keep one model on device (others parked in RAM)", "sd"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", "sd", minimum=1, maximum=12),
    "sd_model_prediction_overrides": OptionInfo(
        {}, "Prediction type per checkpoint (name → epsilon | v_prediction), overriding detection", "sd"),
    "sd_vae": OptionInfo("Automatic", "SD VAE (Automatic, None = the checkpoint's own, or a file)", "sd"),
    "sd_vae_overrides_per_model_preferences": OptionInfo(True, "Selected VAE overrides per-model preferences", "sd"),
    "emphasis": OptionInfo("Original", "Emphasis mode for (words:1.2)", "sd",
                           choices=("Original", "No norm", "Ignore", "None")),
    "randn_source": OptionInfo("CPU", "Random number generator source", "sd", choices=("CPU", "GPU")),
    # Saving images
    "samples_save": OptionInfo(True, "Always save all generated images", "saving-images"),
    "samples_format": OptionInfo("png", "File format for images", "saving-images", choices=("png", "jpg", "webp")),
    "grid_save": OptionInfo(True, "Always save all generated image grids", "saving-images"),
    "grid_format": OptionInfo("png", "File format for grids", "saving-images", choices=("png", "jpg", "webp")),
    "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters into files",
                                 "saving-images"),
    "save_to_dirs": OptionInfo(True, "Save images to a subdirectory named after the date", "saving-to-dirs"),
    "grid_save_to_dirs": OptionInfo(True, "Save grids to a subdirectory", "saving-to-dirs"),
    "outdir_txt2img_samples": OptionInfo("outputs/txt2img-images", "Output directory for txt2img images",
                                         "saving-paths", restrict_api=True),
    "outdir_txt2img_grids": OptionInfo("outputs/txt2img-grids", "Output directory for txt2img grids",
                                       "saving-paths", restrict_api=True),
    "outdir_img2img_samples": OptionInfo("outputs/img2img-images", "Output directory for img2img images",
                                         "saving-paths", restrict_api=True),
    "outdir_img2img_grids": OptionInfo("outputs/img2img-grids", "Output directory for img2img grids",
                                       "saving-paths", restrict_api=True),
    "outdir_extras_samples": OptionInfo("outputs/extras-images", "Output directory for images from extras tab",
                                        "saving-paths", restrict_api=True),
    # Upscaling
    "ESRGAN_tile": OptionInfo(192, "Tile size for ESRGAN-family upscalers (0 = no tiling)", "upscaling",
                              minimum=0, maximum=512),
    "ESRGAN_tile_overlap": OptionInfo(8, "Tile overlap for ESRGAN-family upscalers, in pixels", "upscaling",
                                      minimum=0, maximum=48),
    "upscaler_for_img2img": OptionInfo("None", "Upscaler for img2img (resizing up without a latent mode)",
                                       "upscaling"),
    "face_restoration_model": OptionInfo("CodeFormer", "Face restoration model", "face-restoration",
                                         choices=("CodeFormer", "GFPGAN")),
    "code_former_weight": OptionInfo(0.5, "CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
                                     "face-restoration", minimum=0.0, maximum=1.0),
    # img2img
    "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies",
                                    "img2img"),
    "img2img_background_color": OptionInfo("#ffffff", "With img2img, fill transparent parts of the input image "
                                           "with this color", "img2img"),
    "hires_fix_show_sampler": OptionInfo(False, "Hires fix: show hires sampler selection", "ui"),
    "hires_fix_show_prompts": OptionInfo(False, "Hires fix: show hires prompt and negative prompt", "ui"),
    # Infotext
    "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext", "infotext"),
    "add_model_name_to_info": OptionInfo(True, "Add model name to infotext", "infotext"),
    "add_vae_name_to_info": OptionInfo(True, "Add VAE name to infotext", "infotext"),
    "add_vae_hash_to_info": OptionInfo(True, "Add VAE hash to infotext", "infotext"),
    "add_version_to_infotext": OptionInfo(True, "Add program version to infotext", "infotext"),
    # Live previews
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image", "ui"),
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period (steps)", "ui", minimum=-1,
                                              maximum=32),
    # API (security switches: never changeable through the API itself)
    "api_enable_requests": OptionInfo(True, "Allow http:// and https:// URLs for input images in the API",
                                      "api", restrict_api=True),
    "api_useragent": OptionInfo("", "User agent for API image requests", "api", restrict_api=True),
    # Queue
    "queue_max_size": OptionInfo(64, "Maximum number of waiting jobs", "system", minimum=1, maximum=10000),
    # ControlNet (the sd-webui-controlnet extension's keys)
    "control_net_unit_count": OptionInfo(3, "Multi-ControlNet: ControlNet unit number (requires restart)",
                                         "control_net", minimum=1, maximum=10),
    "control_net_model_cache_size": OptionInfo(2, "Model cache size (requires restart)", "control_net",
                                               minimum=1, maximum=10),
    "control_net_no_detectmap": OptionInfo(False, "Do not append detectmap to output", "control_net"),
    "control_net_detectmap_autosaving": OptionInfo(False, "Allow detectmap auto saving", "control_net"),
    "control_net_detectedmap_dir": OptionInfo("outputs/detected_maps", "Directory for detected maps auto saving",
                                              "control_net", restrict_api=True),
}


class Options:
    """Current values of every option; persisted to `config.json` atomically on change."""

    def __init__(self, path: Path | None, frozen: bool = False):
        self._path = path
        self._frozen = frozen
        self._lock = threading.Lock()
        # Per-request values (A1111's override_settings), seen only by the thread running that request:
        # other requests, the UI and GET /options keep seeing the saved values.
        self._local = threading.local()
        self._values: dict[str, Any] = {key: info.default for key, info in OPTIONS.items()}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        # A damaged config.json falls back to defaults rather than blocking start-up.
        for key, value in read_json_object(path).items():
            info = OPTIONS.get(key)
            if info is None:
                self._values[key] = value  # keep unknown keys (extensions' settings) untouched
                continue
            try:
                self._values[key] = info.validate(key, value)
            except ValueError:
                pass

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        overrides = getattr(self._local, "overrides", {})
        if key in overrides:
            return overrides[key]
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        overrides = getattr(self._local, "overrides", {})
        return overrides[key] if key in overrides else self._values.get(key, default)

    @contextlib.contextmanager
    def overridden(self, values: dict[str, Any]):
        """Within the block, and on this thread only, read `values` (already validated) instead of the saved ones."""
        before = getattr(self._local, "overrides", {})
        self._local.overrides = {**before, **values}
        try:
            yield
        finally:
            self._local.overrides = before

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def validate(self, changes: dict[str, Any], *, from_api: bool) -> dict[str, Any]:
        """Check a set of changes without applying them; raises ValueError naming the first bad key."""
        if self._frozen:
            raise ValueError("settings are frozen (--freeze-settings)")
        checked = {}
        for key, value in changes.items():
            info = OPTIONS.get(key)
            if info is None:
                raise ValueError(f"{key}: unknown option")
            if from_api and info.restrict_api:
                raise ValueError(f"{key}: cannot be changed through the API")
            checked[key] = info.validate(key, value)
        return checked

    def update(self, changes: dict[str, Any], *, from_api: bool = False) -> None:
        checked = self.validate(changes, from_api=from_api)
        with self._lock:
            self._values.update(checked)
            self._save()

    def _save(self) -> None:
        if self._path is not None:
            write_json_atomically(self._path, self._values)
