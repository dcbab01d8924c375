"""The settings registry: every option's key, default, label, section and type, persisted to config.json.

Keys are A1111's (`modules/shared_options.py`) so `/sdapi/v1/options` clients and `override_settings`
work unchanged. Options marked `restrict_api` (output folders, filename patterns) cannot be changed
over the API, as in A1111, because a writable output path is a file-write primitive.

`OPTIONS` is the built-in table; each `Options` object starts from it and takes more through `add_option`
(extensions, from `on_ui_settings`). Everything that validates reads the object's own registry.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from modules.untrusted import json_file, user_files
from modules.untrusted.json_file import write_json_atomically

log = logging.getLogger(__name__)

# A1111's section ids and titles, in the order its Settings tab lists them; extensions add their own.
SECTIONS: dict[str, str] = {
    "saving-images": "Saving images/grids",
    "saving-paths": "Paths for saving",
    "saving-to-dirs": "Saving to a directory",
    "upscaling": "Upscaling",
    "face-restoration": "Face restoration",
    "system": "System",
    "profiler": "Profiler",
    "api": "API",
    "training": "Training",
    "sd": "Stable Diffusion",
    "sdxl": "Stable Diffusion XL",
    "sd3": "Stable Diffusion 3",
    "vae": "VAE",
    "img2img": "img2img",
    "optimizations": "Optimizations",
    "compatibility": "Compatibility",
    "interrogate": "Interrogate",
    "extra_networks": "Extra Networks",
    "ui_prompt_editing": "Prompt editing",
    "ui_gallery": "Gallery",
    "ui_alternatives": "UI alternatives",
    "ui": "User interface",
    "infotext": "Infotext",
    "sampler-params": "Sampler parameters",
    "postprocessing": "Postprocessing",
    "canvas_hotkey": "Canvas Hotkeys",
    "settings_in_ui": "Settings in UI",
    "callbacks": "Callbacks",
    "control_net": "ControlNet",
}


def comma_list(text: str | None) -> list[str]:
    """A comma-separated flag value ("sd, ui") as a list, blanks dropped."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _choice_value(choice: Any) -> Any:
    """Gradio choices may be (label, value) pairs; the stored value is the second."""
    return choice[1] if isinstance(choice, (tuple, list)) and len(choice) == 2 else choice


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class OptionInfo:
    """One setting. The fields after `restrict_api` keep A1111's names, for extensions and the Settings tab:
    `component` is a UI class (opaque to the backend) made with `component_args` (a dict, or a callable giving
    one, whose minimum/maximum/choices also bound the value); `onchange()` runs after the value changes;
    `refresh()` is the Settings tab's 🔄; the comments are HTML shown before and after the label. A section is
    an id from SECTIONS, or A1111's (id, title) / (id, title, category) which `Options.add_option` registers;
    an option without a section is not shown in the Settings tab (A1111's hidden options)."""
    default: Any = None
    label: str = ""
    section: str | tuple | None = None
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    restrict_api: bool = False
    component: Any = None
    component_args: dict | Callable[[], dict] | None = None
    onchange: Callable[[], Any] | None = None
    refresh: Callable[[], Any] | None = None
    comment_before: str = ""
    comment_after: str = ""
    infotext: str | None = None
    category_id: str | None = None

    # A1111's chainable helpers (HTML by design: extensions put links in them); each returns a changed copy.
    def info(self, text: str) -> "OptionInfo":
        return replace(self, comment_after=f"{self.comment_after}<span class='info'>({text})</span>")

    def html(self, text: str) -> "OptionInfo":
        return replace(self, comment_after=self.comment_after + text)

    def link(self, label: str, url: str) -> "OptionInfo":
        return replace(self, comment_before=f"{self.comment_before}[<a href='{url}' target='_blank'>{label}</a>]")

    def js(self, label: str, js_func: str) -> "OptionInfo":
        link = f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return replace(self, comment_before=self.comment_before + link)

    def needs_restart(self) -> "OptionInfo":
        return replace(self, comment_after=f"{self.comment_after} <span class='info'>(requires restart)</span>")

    def needs_reload_ui(self) -> "OptionInfo":
        # The page is built once at start here, so what A1111 rebuilds on "Reload UI" needs a restart.
        return self.needs_restart()

    def ui_args(self) -> dict:
        """`component_args` as a dict; a callable is called now (one that fails gives {} and a warning)."""
        args = self.component_args
        if callable(args):
            try:
                args = args()
            except Exception as error:  # noqa: BLE001 - an extension's bug must not block settings
                log.warning("component_args of %r failed: %s", self.label, error)
                return {}
        return dict(args) if isinstance(args, dict) else {}

    def bounds(self) -> tuple[tuple | None, float | None, float | None]:
        """(choices, minimum, maximum): the explicit ones, else those in `component_args`."""
        args = self.ui_args()
        choices = self.choices
        if choices is None and isinstance(args.get("choices"), (list, tuple)) and not args.get("allow_custom_value"):
            choices = tuple(_choice_value(choice) for choice in args["choices"])
        minimum = self.minimum if self.minimum is not None else args.get("minimum")
        maximum = self.maximum if self.maximum is not None else args.get("maximum")
        return (choices, minimum if _is_number(minimum) else None, maximum if _is_number(maximum) else None)

    def validate(self, key: str, value: Any) -> Any:
        """Return the value coerced to the option's type, or raise ValueError naming the key."""
        choices, minimum, maximum = self.bounds()
        kind = type(self.default)
        if self.default is None and value is None:
            return None   # an extension's option whose default is None (A1111's "not set")
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{key}: expected true or false, got {value!r}")
        elif kind in (int, float):
            if not _is_number(value):
                raise ValueError(f"{key}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{key}: must be a finite number")
            if kind is int and value != int(value):
                raise ValueError(f"{key}: expected an integer, got {value!r}")
            value = kind(value)
            if minimum is not None and value < minimum:
                raise ValueError(f"{key}: must be at least {minimum}")
            if maximum is not None and value > maximum:
                raise ValueError(f"{key}: must be at most {maximum}")
        elif kind is str:
            if not isinstance(value, str):
                raise ValueError(f"{key}: expected a string, got {value!r}")
        elif kind is dict:
            if not isinstance(value, dict):
                raise ValueError(f"{key}: expected an object, got {value!r}")
        elif kind is list:
            if not isinstance(value, list):
                raise ValueError(f"{key}: expected a list, got {value!r}")
            if all(isinstance(item, str) for item in self.default) and not all(isinstance(item, str) for item in value):
                raise ValueError(f"{key}: expected a list of strings, got {value!r}")
            for item in value if choices is not None else ():
                if item not in choices:
                    raise ValueError(f"{key}: {item!r} is not one of {list(choices)}")
            return list(value)
        elif self.default is not None and not isinstance(value, kind):
            raise ValueError(f"{key}: expected {kind.__name__}, got {value!r}")
        if choices is not None and value not in choices:
            raise ValueError(f"{key}: must be one of {list(choices)}")
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
    "quicksettings_list": OptionInfo(
        ["sd_model_checkpoint", "sd_vae"], "Quicksettings list", "ui",
    ).info("setting entries that appear at the top of page rather than in settings tab").needs_restart(),
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image", "ui"),
    "show_progress_type": OptionInfo("TAESD", "Live preview method (TAESD needs its decoder in models/VAE-taesd; "
                                     "without it, and for Approx NN, Approx cheap is used)", "ui",
                                     choices=("Full", "Approx NN", "Approx cheap", "TAESD")),
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period (steps)", "ui", minimum=-1,
                                              maximum=32),
    # API (security switches: never changeable through the API itself)
    "api_enable_requests": OptionInfo(True, "Allow http:// and https:// URLs for input images in the API",
                                      "api", restrict_api=True),
    "api_useragent": OptionInfo("", "User agent for API image requests", "api", restrict_api=True),
    # Optimizations (speed and memory; none of them changes the image beyond fp16 rounding, except VAE tiling's
    # faint seams)
    "compile_unet": OptionInfo("None", "Compile the UNet with torch.compile (CUDA). The first image of each size "
                               "compiles; the compiled code is cached in <data-dir>/cache, so a restart does not "
                               "pay again", "optimizations",
                               choices=("None", "torch.compile", "torch.compile + CUDA graphs")),
    "compile_vae": OptionInfo(False, "Compile the VAE decoder too (with compile_unet)", "optimizations"),
    "vae_tiling": OptionInfo(False, "Decode and encode large images in tiles (less VRAM; always on with "
                             "--lowvram, and used anyway when a decode runs out of memory)", "optimizations"),
    "vae_slicing": OptionInfo(False, "Decode a batch one image at a time (less VRAM)", "optimizations"),
    "attention_slicing": OptionInfo(False, "Compute attention in slices (less VRAM, slower; for cards where "
                                    "PyTorch's memory-efficient attention is missing)", "optimizations"),
    "token_merging_ratio": OptionInfo(0.0, "Token merging ratio (0 = off; faster at large sizes, changes the "
                                      "image)", "optimizations", minimum=0.0, maximum=0.9),
    "token_merging_ratio_img2img": OptionInfo(0.0, "Token merging ratio for img2img (0 = the one above)",
                                              "optimizations", minimum=0.0, maximum=0.9),
    "token_merging_ratio_hr": OptionInfo(0.0, "Token merging ratio for the hires pass (0 = the first pass's)",
                                         "optimizations", minimum=0.0, maximum=0.9),
    "warmup_after_load": OptionInfo(True, "Warm up the GPU after a model loads, so the first image is not slow "
                                    "(CUDA only)", "optimizations"),
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
    # Hidden (no section): the Extensions tab writes them
    # Which extensions run code at start: changed in the Extensions tab (which refuses it when the server is
    # reachable from the network), never through the API, where that check would be bypassed.
    "disabled_extensions": OptionInfo([], "Disable these extensions", restrict_api=True),
    "disable_all_extensions": OptionInfo("none", "Disable all extensions (preserves the list of disabled extensions)",
                                         choices=("none", "extra", "all"), restrict_api=True),
}


class Settings:
    """Option values frozen for one job (Options.snapshot), read as the options are: `settings.samples_format`."""

    def __init__(self, values: Mapping[str, Any]):
        self._values = MappingProxyType(dict(values))

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)


class Options:
    """Current values of every option; persisted to `config.json` atomically on change.

    Freezing (A1111's --freeze-settings, --freeze-settings-in-sections, --freeze-specific-settings) refuses
    changes to all options, to those of the given section ids, or to the given keys."""

    def __init__(self, path: Path | None, frozen: bool = False, frozen_sections: Iterable[str] = (),
                 frozen_keys: Iterable[str] = ()):
        self._path = path
        self._frozen = frozen
        self._frozen_sections = {section.lower() for section in frozen_sections}
        self._frozen_keys = set(frozen_keys)
        self._lock = threading.Lock()
        # Per-request values (A1111's override_settings), seen only by the thread running that request:
        # other requests, the UI and GET /options keep seeing the saved values.
        self._local = threading.local()
        self._infos: dict[str, OptionInfo] = dict(OPTIONS)
        self._section_titles: dict[str, str] = dict(SECTIONS)
        self._values: dict[str, Any] = {key: copy.deepcopy(info.default) for key, info in OPTIONS.items()}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        # A damaged config.json (a hand edit gone wrong) falls back to defaults rather than blocking start-up,
        # and is kept aside first: the next save would otherwise replace the user's settings with defaults.
        try:
            loaded = json_file.parse(user_files.read_text(path))
        except (OSError, ValueError) as error:
            loaded = None
            reason = str(error)
        else:
            reason = "not a JSON object"
        if not isinstance(loaded, dict):
            aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                path.replace(aside)
                log.error("%s could not be read (%s); moved to %s, using default settings", path, reason, aside)
            except OSError as error:
                log.error("%s could not be read (%s) nor moved aside (%s)", path, reason, error)
            return
        for key, value in loaded.items():
            info = self._infos.get(key)
            if info is None:
                self._values[key] = value  # kept untouched: an extension may register it later (add_option)
                continue
            try:
                self._values[key] = info.validate(key, value)
            except ValueError as error:
                log.warning("config.json: %s; using the default", error)

    # ---------------------------------------------------------------- the registry

    def infos(self) -> dict[str, OptionInfo]:
        """Every registered option: the built-in ones, then those added."""
        return dict(self._infos)

    @property
    def data_labels(self) -> dict[str, OptionInfo]:
        """A1111's name for the registry (extensions read it)."""
        return self.infos()

    def add_option(self, key: str, info: OptionInfo) -> None:
        """Register an option (A1111's `opts.add_option`, which extensions call from `on_ui_settings`). A value
        already saved in config.json for the key is kept when it is valid for the option, else the default."""
        with self._lock:
            info = self._with_section_id(info)
            self._infos[key] = info
            if key in self._values:
                try:
                    self._values[key] = info.validate(key, self._values[key])
                    return
                except ValueError as error:
                    log.warning("config.json: %s; using the default", error)
            self._values[key] = copy.deepcopy(info.default)

    def _with_section_id(self, info: OptionInfo) -> OptionInfo:
        """A1111's section (id, title[, category]) → the id, its title registered (a known id keeps ours)."""
        section = info.section
        if not isinstance(section, (tuple, list)):
            return replace(info, section=self._known_section(section) if section else None)
        if not section or section[0] is None:   # A1111's (None, "Hidden options")
            return replace(info, section=None)
        ident = self._known_section(str(section[0]))
        if len(section) > 1:
            self._section_titles.setdefault(ident, str(section[1]))
        category = section[2] if len(section) > 2 else info.category_id
        return replace(info, section=ident, category_id=category)

    def _known_section(self, ident: str) -> str:
        """A section id as registered, matched without case (A1111 spells our "api" "API")."""
        return next((known for known in self._section_titles if known.lower() == ident.lower()), ident)

    def section_title(self, section: str) -> str:
        return self._section_titles.get(section, section)

    def sections(self) -> list[tuple[str, str]]:
        """(id, title) of every section that has options: A1111's order, then extensions' in the order added."""
        used = list(dict.fromkeys(info.section for info in self._infos.values() if info.section))
        order = list(SECTIONS)
        used.sort(key=lambda section: order.index(section) if section in order else len(order))
        return [(section, self.section_title(section)) for section in used]

    def onchange(self, key: str, func: Callable[[], Any], call: bool = True) -> None:
        """A1111's `opts.onchange`: run `func()` after each change of `key` (and now, unless call=False)."""
        with self._lock:
            info = self._infos.get(key)
            if info is None:
                raise ValueError(f"{key}: unknown option")
            self._infos[key] = replace(info, onchange=func)
        if call:
            func()

    def frozen_reason(self, key: str) -> str | None:
        """Why `key` cannot be changed (a --freeze-* flag), or None."""
        if self._frozen:
            return "settings are frozen (--freeze-settings)"
        if key in self._frozen_keys:
            return "this setting is frozen (--freeze-specific-settings)"
        info = self._infos.get(key)
        section = info.section if info is not None else None
        if section and section.lower() in self._frozen_sections:
            return (f"settings in section '{self.section_title(section)}' ({section}) are frozen "
                    f"(--freeze-settings-in-sections)")
        return None

    # ---------------------------------------------------------------- values

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

    @property
    def data(self) -> Mapping[str, Any]:
        """A1111's `opts.data`: the saved values, read-only (changes go through `update`)."""
        return MappingProxyType(self._values)

    def snapshot(self, overrides: Mapping[str, Any] | None = None) -> Settings:
        """The values as they are now, with those overridden on this thread and then `overrides` on top: what one
        generation runs with, fixed when it starts (a change in the UI meanwhile does not reach it)."""
        with self._lock:
            values = dict(self._values)
        values.update(getattr(self._local, "overrides", {}))
        values.update(overrides or {})
        return Settings(values)

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
        """Check a set of changes without applying them; raises ValueError naming the first bad key.
        Setting a frozen option to the value it has is not a change, so it is allowed (as in A1111)."""
        checked = {}
        for key, value in changes.items():
            info = self._infos.get(key)
            if info is None:
                raise ValueError(f"{key}: unknown option")
            if from_api and info.restrict_api:
                raise ValueError(f"{key}: cannot be changed through the API")
            checked[key] = info.validate(key, value)
            reason = self.frozen_reason(key)
            if reason and checked[key] != self._values.get(key):
                raise ValueError(f"{key}: cannot be changed: {reason}")
        return checked

    def update(self, changes: dict[str, Any], *, from_api: bool = False) -> list[str]:
        """Validate and save the changes (all or none); run the `onchange` of each option that changed,
        and return their keys."""
        checked = self.validate(changes, from_api=from_api)
        with self._lock:
            changed = [key for key, value in checked.items() if self._values.get(key) != value]
            if self._path is not None:   # saved first: a failed write leaves the settings as they were
                try:
                    write_json_atomically(self._path, {**self._values, **checked})
                except OSError as error:
                    raise ValueError(f"settings not saved: {error.strerror or error}") from None
            self._values.update(checked)
        for key in changed:
            callback = self._infos[key].onchange
            if callback is not None:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - the value is saved; an extension's hook failing is logged
                    log.exception("%s: its onchange hook failed", key)
        return changed

