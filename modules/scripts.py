"""A1111's script API (`modules/scripts.py`): `Script` subclasses with `ui()` and processing hooks.

A script file in `scripts/` (ours: X/Y/Z plot, prompt matrix, prompts from file) or in an extension's
`scripts/` folder defines `Script` subclasses. `show()` says whether it is a dropdown script (True), an
always-on one (`AlwaysVisible`) or hidden (False) in txt2img and img2img. Its `ui()` components' values
arrive as positional `*args` in every hook, which is why the API's `script_args` and
`alwayson_scripts[...]["args"]` are positional too.

`ScriptRunner` holds one mode's scripts and calls their hooks in A1111's order; see docs/extensions.md for
which hooks run where on the diffusers backend. A hook that raises is logged with its script and skipped
(except `run`, whose failure is the job's failure): one broken extension never breaks a generation.
"""
from __future__ import annotations

import logging
import os
import re
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.script_callbacks import error_line

log = logging.getLogger(__name__)


class _AlwaysVisible:
    def __repr__(self) -> str:
        return "AlwaysVisible"


AlwaysVisible = _AlwaysVisible()

# The extension folder of the script file being imported (A1111's scripts.basedir()).
_loading_basedir = ""


def basedir() -> str:
    """The folder of the extension whose script is being loaded (the project root for built-in scripts)."""
    return _loading_basedir or _PROJECT_ROOT


_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A1111's record of each Script class loaded, filled by modules/addons/script_loading.py as it imports them.
ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list[ScriptClassData] = []


def list_scripts(scriptdirname: str, extension: str, *, include_extensions: bool = True) -> list[ScriptFile]:
    """A1111's: the files ending in `extension` in the project's `scriptdirname` folder, then in each enabled
    extension's, in load order (extension name, then file name; metadata.ini's ordering is not applied here)."""
    from modules import shared

    folders = [Path(_PROJECT_ROOT)]
    if include_extensions:
        folders += [Path(item.path) for item in shared.services().scripts.extensions if item.enabled]
    found = []
    for folder in folders:
        directory = folder / scriptdirname
        if directory.is_dir():
            found += [ScriptFile(str(folder), path.name, str(path)) for path in sorted(directory.iterdir())
                      if path.is_file() and path.suffix.lower() == extension.lower()]
    return found


@dataclass
class OnComponent:
    """What a `Script.on_before_component` / `on_after_component` callback receives."""
    component: Any


@dataclass
class PostprocessImageArgs:
    image: Any           # PIL image; replace it to change the saved and returned image


@dataclass
class PostprocessBatchListArgs:
    images: list         # the batch's PIL images; replace or extend the list


# A1111's argument objects of hooks this backend does not call (post_sample, on_mask_blend): importable.
@dataclass
class PostSampleArgs:
    samples: Any


@dataclass
class MaskBlendArgs:
    current_latent: Any
    nmask: Any
    init_latent: Any
    mask: Any
    blended_latent: Any
    denoiser: Any = None
    sigma: Any = None


class Script:
    """Base class of every script. Override what you need; the defaults do nothing."""

    filename: str = ""                 # set by the loader
    args_from: int = 0                 # this script's slice of p.script_args
    args_to: int = 0
    alwayson: bool = False
    is_txt2img: bool = False
    is_img2img: bool = False
    group: Any = None
    create_group: bool = True
    infotext_fields: list | None = None    # [(component, infotext key)] for paste
    paste_field_names: list | None = None
    api_info: Any = None
    section: str | None = None
    controls: list | None = None
    setup_for_ui_only: bool = False
    on_before_component_elem_id: list | None = None   # [(elem_id, callback)], see on_before_component
    on_after_component_elem_id: list | None = None

    def title(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} must define title()")

    def ui(self, is_img2img: bool):
        """The script's gradio components; their values are passed to every hook as *args, in order."""
        return []

    def show(self, is_img2img: bool):
        """True: in the Script dropdown; AlwaysVisible: always on; False: not in this tab."""
        return True

    def run(self, p, *args):
        """A dropdown script's replacement for the generation: return a Processed (usually from process_images)."""
        return None

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        pass

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_hr(self, p, *args):
        pass

    def on_mask_blend(self, p, mba, *args):
        pass

    def post_sample(self, p, ps, *args):
        pass

    def postprocess_maskoverlay(self, p, ppmo, *args):
        pass

    def postprocess_image_after_composite(self, p, pp, *args):
        pass

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """A1111's element id for one of this script's components: script_[<tab>_]<title>_<item>, the tab
        only when the script shows in both tabs alike, the title lower-cased, spaces to _, the rest dropped."""
        tab = f"{'img2img' if self.is_img2img else 'txt2img'}_" if self.show(True) == self.show(False) else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{title}_{item_id}"

    # A1111's per-component hooks, called for every component built in this script's tab (the web UI's own with
    # A1111's elem_ids, and other scripts'): modules/ui/component_hooks.py.
    def before_component(self, component, **kwargs):
        """Before a component is built: `kwargs.get("elem_id")` names it; components made here go before it."""

    def after_component(self, component, **kwargs):
        """After a component is built: keep it (`self.prompt = component`) or wire events to it."""

    def on_before_component(self, callback, *, elem_id):
        """Call `callback(OnComponent(component))` before the component with `elem_id` is built (register it in
        `__init__`, `show()` or early in `ui()`)."""
        self.on_before_component_elem_id = [*(self.on_before_component_elem_id or []), (elem_id, callback)]

    def on_after_component(self, callback, *, elem_id):
        """Call `callback(OnComponent(component))` after the component with `elem_id` is built."""
        self.on_after_component_elem_id = [*(self.on_after_component_elem_id or []), (elem_id, callback)]

    @property
    def name(self) -> str:
        """What the API matches `script_name` and `alwayson_scripts` keys against: the title, lower case."""
        return self.title().lower()


class ScriptRunner:
    """One tab's scripts (txt2img or img2img): which are always on, which are in the dropdown, and their hooks."""

    def __init__(self, is_img2img: bool):
        self.is_img2img = is_img2img
        self.scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.defaults: dict[str, list] = {}      # script name → default args (from its ui(); see modules/ui/scripts)
        self.arg_infos: dict[str, list[dict]] = {}   # script name → each arg's label, value, range, choices
        self.ui_failed: set[str] = set()        # names of scripts whose ui() failed: they take their args as sent
        self.failures: dict[tuple[str, str], str] = {}   # (script file, "ui()" or "<hook>()") → the error's line

    def add(self, script: Script) -> None:
        shown = script.show(self.is_img2img)
        if shown is False or shown is None:
            return
        script.is_img2img, script.is_txt2img = self.is_img2img, not self.is_img2img
        self.scripts.append(script)
        if shown is AlwaysVisible:
            script.alwayson = True
            self.alwayson_scripts.append(script)
        else:
            self.selectable_scripts.append(script)

    @property
    def titles(self) -> list[str]:
        """A1111's list of the dropdown's titles. A new list on each read: an extension that adds a script to the
        dropdown appends it to `selectable_scripts` (and to this list, which A1111 kept in step)."""
        return [script.title() for script in self.selectable_scripts]

    def find_alwayson(self, name: str) -> Script | None:
        return next((s for s in self.alwayson_scripts if s.name == name.strip().lower()), None)

    def find_selectable(self, name: str) -> Script | None:
        return next((s for s in self.selectable_scripts if s.name == name.strip().lower()), None)

    def set_defaults(self, defaults: dict[str, list], arg_infos: dict[str, list[dict]] | None = None) -> None:
        """Record each script's default args and lay out A1111's flat p.script_args: slot 0 holds the index of
        the chosen dropdown script (0 = None), then each script's slice in order."""
        self.defaults = {name: list(values) for name, values in defaults.items()}
        self.arg_infos = dict(arg_infos or {})
        position = 1
        for script in self.scripts:
            count = len(self.defaults.get(script.name, []))
            script.args_from, script.args_to = position, position + count
            position += count

    def args_for(self, script: Script, given: list | None) -> list:
        """The script's args: its defaults with the given ones over them. More than its ui() has is a
        ValueError: the extra values would shift into the next script's slice of p.script_args."""
        defaults = self.defaults.get(script.name, [])
        given = list(given or [])
        if script.name in self.ui_failed:   # no controls to count or pad from: what the client sent
            return given
        if len(given) > len(defaults):
            raise ValueError(f"{script.name}: takes {len(defaults)} arguments, got {len(given)}")
        return given + defaults[len(given):]

    def flat_args(self, selected: Script | None, args_by_name: dict[str, list]) -> list:
        """A1111's p.script_args: [selected index, *every script's args in order]. Each script's slice is laid
        out again from what it is given (a script whose ui() failed takes as many args as were sent); jobs run
        one at a time, so the slice stays the job's while it runs."""
        flat: list = [self.selectable_scripts.index(selected) + 1 if selected is not None else 0]
        for script in self.scripts:
            args = list(args_by_name.get(script.name, self.defaults.get(script.name, [])))
            script.args_from, script.args_to = len(flat), len(flat) + len(args)
            flat += args
        return flat

    def run(self, p, *args):
        """A1111's: the chosen dropdown script's run(p, *its args) (`args` is p.script_args, the chosen index
        first; 0: none, which returns None). Called through the runner so that an extension's wrapper of
        `scripts_txt2img.run` sees it, as in A1111."""
        index = args[0] if args else 0
        if not index:
            return None
        script = self.selectable_scripts[int(index) - 1]
        return script.run(p, *args[script.args_from:script.args_to])

    # ------------------------------------------------------------------ hooks, A1111's order

    def _call(self, hook: str, p, *extra, **kwargs) -> None:
        for script in self.alwayson_scripts:
            args = p.script_args[script.args_from:script.args_to]
            try:
                getattr(script, hook)(p, *extra, *args, **kwargs)
            except Exception as error:
                log.exception("Error running %s of script %s (%s)", hook, script.title(), script.filename)
                self.failures[(script.filename, f"{hook}()")] = error_line(error)

    def setup(self, p) -> None:
        self._call("setup", p)

    def before_process(self, p) -> None:
        self._call("before_process", p)

    def process(self, p) -> None:
        self._call("process", p)

    def before_process_batch(self, p, **kwargs) -> None:
        self._call("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs) -> None:
        self._call("process_batch", p, **kwargs)

    def postprocess_batch(self, p, images, **kwargs) -> None:
        self._call("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, **kwargs) -> None:
        self._call("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p, pp: PostprocessImageArgs) -> None:
        self._call("postprocess_image", p, pp)

    def postprocess(self, p, processed) -> None:
        self._call("postprocess", p, processed)


def __getattr__(name: str):
    # A1111's module globals for the two tabs' runners, for extensions that reach for them.
    if name in ("scripts_txt2img", "scripts_img2img"):
        from modules import shared

        host = shared.services().scripts
        return host.txt2img if name == "scripts_txt2img" else host.img2img
    raise AttributeError(f"module 'modules.scripts' has no attribute {name!r}")
