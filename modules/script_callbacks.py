"""A1111's global callbacks (`modules/script_callbacks.py`): extensions register `on_*` hooks, the app fires them.

Extension code calls the module-level `on_*` functions at import time, as in A1111. They register into the
`CallbackRegistry` being loaded (`registry()`), which is owned by the services' `ScriptHost`; the backend fires
callbacks through that object, never through this module's functions. A callback that raises is logged with
its origin and skipped: one broken extension cannot stop a generation or the UI.

Fired: app_started, model_loaded, ui_tabs, ui_settings, before_ui, before_image_saved, image_saved,
cfg_denoiser, cfg_denoised, cfg_after_cfg, infotext_pasted, script_unloaded, before_token_counter, and for every
component the UI builds before_component and after_component (modules/ui/component_hooks.py).
Accepted but never fired on this backend (docs/extensions.md says so): extra_noise, list_optimizers,
list_unets, ui_train_tabs, image_grid, before_reload.
"""
from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

CALLBACK_NAMES = (
    "app_started", "before_reload", "model_loaded", "ui_tabs", "ui_train_tabs", "ui_settings", "before_ui",
    "before_image_saved", "image_saved", "image_grid", "extra_noise", "cfg_denoiser", "cfg_denoised",
    "cfg_after_cfg", "before_component", "after_component", "infotext_pasted", "script_unloaded",
    "list_optimizers", "list_unets", "before_token_counter",
)


@dataclass
class ImageSaveParams:
    image: Any            # PIL image; a before_image_saved callback may replace it
    p: Any                # the StableDiffusionProcessing, or None outside a generation
    filename: str         # before saving: the folder (the file is named when written); after: the file
    pnginfo: dict         # {"parameters": infotext}: the one text chunk written


@dataclass
class CFGDenoiserParams:
    """Before each UNet call. `x` is the latent batch fed to the UNet (both CFG halves); replace it to change it."""
    x: Any
    image_cond: Any
    sigma: Any            # the diffusers timestep of this call
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None


@dataclass
class CFGDenoisedParams:
    """After each UNet call, before guidance combines the halves: `x` is the UNet's output, replaceable."""
    x: Any
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any = None


@dataclass
class AfterCFGCallbackParams:
    """After each sampling step: `x` is the batch's latents after the scheduler step, replaceable."""
    x: Any
    sampling_step: int
    total_sampling_steps: int


@dataclass
class BeforeTokenCounterParams:
    prompt: str
    steps: int
    styles: list = field(default_factory=list)
    is_positive: bool = True


@dataclass
class ScriptCallback:
    script: str           # the file that registered it
    callback: Callable
    name: str             # unique name, used for ordering ("<extension>/<file>/<callback>")


def error_line(error: BaseException) -> str:
    """An exception as one line ("ValueError: boom"), as the Extensions tab lists failures; an import that fails
    because this backend lacks what the extension needs says so (`missing_names.explain_import_error`)."""
    from modules.addons.missing_names import MissingA1111Name, explain_import_error

    if isinstance(error, MissingA1111Name):   # it says itself what is missing and why
        return f"AttributeError: {error}"
    lines = "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()
    line = lines[-1] if lines else type(error).__name__
    reason = explain_import_error(error)
    return f"{line}: {reason}" if reason else line


class CallbackRegistry:
    """Every registered callback by kind, in load order, then as extensions' metadata.ini orders them."""

    def __init__(self):
        self._callbacks: dict[str, list[ScriptCallback]] = {name: [] for name in CALLBACK_NAMES}
        self.loading_script = ""      # the script file being imported, recorded with its callbacks
        self.loading_extension = ""   # its extension's canonical name ("base" for the project's scripts)
        self.failures: dict[tuple[str, str], str] = {}   # (file, "on_<kind> callback") → the last error's line

    def add(self, kind: str, callback: Callable, name: str | None = None) -> None:
        """A1111's names, which metadata.ini's [callbacks/<name>] sections order: <extension>/<file>/<kind>[/name],
        with -1, -2, ... when taken."""
        if not callable(callback):
            raise TypeError(f"on_{kind}: {callback!r} is not callable")
        script = self.loading_script or _caller_file()
        base = f"{self.loading_extension or 'base'}/{os.path.basename(script)}/{kind}" + (f"/{name}" if name else "")
        taken = {item.name for item in self._callbacks[kind]}
        unique = next(candidate for candidate in (base, *(f"{base}-{i}" for i in range(1, 1000)))
                      if candidate not in taken)
        self._callbacks[kind].append(ScriptCallback(script, callback, unique))

    def callbacks(self, kind: str) -> list[ScriptCallback]:
        return list(self._callbacks[kind])

    def reorder(self, kind: str, order: list[str]) -> None:
        """Put the callbacks of `kind` in the order of their names in `order` (a permutation of them)."""
        rank = {name: index for index, name in enumerate(order)}
        self._callbacks[kind].sort(key=lambda item: rank[item.name])

    def remove_script(self, script: str) -> None:
        for kind in CALLBACK_NAMES:
            self._callbacks[kind] = [item for item in self._callbacks[kind] if item.script != script]

    def fire(self, kind: str, *args, **kwargs) -> list:
        """Call each callback of `kind`; returns their results (a failing one is logged and left out)."""
        results = []
        for item in self.callbacks(kind):
            try:
                results.append(item.callback(*args, **kwargs))
            except Exception:   # an extension's bug: reported with its origin, the rest goes on
                log.exception("Error in %s callback %s (%s)", kind, item.name, item.script)
                self.failures[(item.script, f"on_{kind} callback")] = error_line(sys.exc_info()[1])
        return results

    def has(self, kind: str) -> bool:
        return bool(self._callbacks[kind])

    # The ones the backend fires, named so call sites read plainly.
    def model_loaded(self, model) -> None:
        self.fire("model_loaded", model)

    def before_image_saved(self, params: ImageSaveParams) -> None:
        self.fire("before_image_saved", params)

    def image_saved(self, params: ImageSaveParams) -> None:
        self.fire("image_saved", params)

    def infotext_pasted(self, infotext: str, params: dict) -> None:
        self.fire("infotext_pasted", infotext, params)

    def ui_tabs(self) -> list:
        """The (blocks, title, elem_id) tuples extensions add as top-level tabs."""
        return [tab for _, tab in self.ui_tabs_with_origin()]

    def ui_tabs_with_origin(self) -> list[tuple[str, Any]]:
        """(the registering file, one returned tab entry) for each tab; a failing callback is listed and left out."""
        entries = []
        for item in self.callbacks("ui_tabs"):
            try:
                tabs = item.callback()
            except Exception as error:
                log.exception("Error in ui_tabs callback %s (%s)", item.name, item.script)
                self.failures[(item.script, "on_ui_tabs callback")] = error_line(error)
                continue
            try:
                entries += [(item.script, tab) for tab in tabs or []]
            except TypeError:   # not a list: the page reports it as a malformed entry
                entries.append((item.script, tabs))
        return entries


def _caller_file() -> str:
    for frame in inspect.stack()[3:]:
        if not frame.filename.startswith(os.path.dirname(__file__)):
            return frame.filename
    return ""


_current = CallbackRegistry()
_current_lock = threading.Lock()


def registry() -> CallbackRegistry:
    """The registry module-level `on_*` calls go to: the ScriptHost that loaded the extensions last."""
    return _current


def use_registry(target: CallbackRegistry) -> None:
    global _current
    with _current_lock:
        _current = target


def _register(kind: str):
    def on(callback: Callable, *, name: str | None = None) -> None:
        registry().add(kind, callback, name)
    on.__name__ = f"on_{kind}"
    on.__doc__ = f"Register `callback` for {kind} (A1111's script_callbacks.on_{kind})."
    return on


on_app_started = _register("app_started")
on_before_reload = _register("before_reload")
on_model_loaded = _register("model_loaded")
on_ui_tabs = _register("ui_tabs")
on_ui_train_tabs = _register("ui_train_tabs")
on_ui_settings = _register("ui_settings")
on_before_ui = _register("before_ui")
on_before_image_saved = _register("before_image_saved")
on_image_saved = _register("image_saved")
on_image_grid = _register("image_grid")
on_extra_noise = _register("extra_noise")
on_cfg_denoiser = _register("cfg_denoiser")
on_cfg_denoised = _register("cfg_denoised")
on_cfg_after_cfg = _register("cfg_after_cfg")
on_before_component = _register("before_component")
on_after_component = _register("after_component")
on_infotext_pasted = _register("infotext_pasted")
on_script_unloaded = _register("script_unloaded")
on_list_optimizers = _register("list_optimizers")
on_list_unets = _register("list_unets")
on_before_token_counter = _register("before_token_counter")


def remove_current_script_callbacks() -> None:
    """A1111's helper for a script that re-registers on reload: drop what the loading file registered."""
    current = registry()
    if current.loading_script:
        current.remove_script(current.loading_script)
