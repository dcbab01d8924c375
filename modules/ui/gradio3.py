"""Gradio 3 idioms in extensions' code, translated for Gradio 6 (A1111's extensions were written for Gradio 3.41).

`install()` runs once, before extensions' scripts are imported (modules/addons/script_loading.py), as Forge's
modules/gradio_extensions.py does for Gradio 4:

* a removed keyword of a component or layout is translated where Gradio 6 has its equivalent (`source="upload"`
  → `sources=["upload"]`) and otherwise dropped with a warning naming the file that passed it (`tool="sketch"`,
  `brush_radius`, `shape`, ...), instead of the TypeError that would lose the extension's whole UI;
* events take `_js=` (→ `js=`), a bool `show_progress`, `api_name=False`, `show_api=False`;
* `gr.X.update(...)` is `gr.update(...)`, `.style(...)` applies what has a Gradio 6 constructor argument
  (`height`, `grid` → `columns`, `full_width` → `scale`, `container`, ...) and ignores the rest, `gr.Box` is
  `gr.Group`, `gr.Variable` is `gr.State`, `gr.components.IOComponent` is `Component`, and `gr.inputs.X` /
  `gr.outputs.X` are the components (`default=` → `value=`);
* a component class an extension derives from a Gradio one (`class ToolButton(gr.Button)`) renders as its
  Gradio parent: Gradio 6 would take it for a custom component the page cannot load (`subclasses.py`).

The project's own UI uses none of these; `noticed` records what was translated and where, and the tests check
that building the core UI adds nothing to it.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import types
from typing import Any

import gradio as gr
from gradio import events
from gradio.blocks import Block, BlockContext
from gradio.components.base import Component

from modules.ui import subclasses

log = logging.getLogger(__name__)

# What was translated or dropped, with the first file that did it: ("Image(tool=)", ".../ext/scripts/x.py").
noticed: dict[str, str] = {}

# Keywords of A1111's own Component wrapper, not Gradio's: accepted silently.
A1111_KEYWORDS = ("tooltip",)
# .style(...) keywords → the Gradio 6 constructor argument that does the same.
STYLE_NAMES = {"grid": "columns", "full_width": "scale"}

_GRADIO_FOLDER = os.path.dirname(os.path.abspath(gr.__file__)) + os.sep
_PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PROJECT_CODE = tuple(os.path.join(_PROJECT, folder) + os.sep for folder in ("modules", "scripts"))
_PASS_THROUGH = tuple(os.path.join(_PROJECT, "modules", "ui", name)
                      for name in ("gradio3.py", "component_hooks.py", "a1111_components.py", "subclasses.py"))
_installed = False


def install() -> None:
    """Idempotent: patches gradio's classes once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    subclasses.install()
    for cls in _gradio_blocks():
        if "__init__" in vars(cls):
            cls.__init__ = _translating_init(cls, vars(cls)["__init__"])
        for name, value in list(vars(cls).items()):
            if callable(value) and hasattr(value, "event_name"):
                setattr(cls, name, _translating_event(value))
    original_setup = events.EventListener._setup   # .then/.success and classes defined later get theirs here

    def setup(*args, **kwargs):
        return _translating_event(original_setup(*args, **kwargs))

    events.EventListener._setup = staticmethod(setup)
    gr.blocks.postprocess_update_dict = _postprocessing_layout_classes(gr.blocks.postprocess_update_dict)
    gr.Tabs.__exit__ = _tabs_holding_tabs_only(gr.Tabs.__exit__)
    if not hasattr(Block, "update"):
        Block.update = staticmethod(_update)
    if not hasattr(Block, "style"):
        Block.style = _style
    _add_removed_names()


def _gradio_blocks() -> list[type]:
    found, pending = [], [Block]
    while pending:
        cls = pending.pop()
        if subclasses.is_gradio(cls):
            found.append(cls)
        pending += cls.__subclasses__()
    return found


def _caller() -> str:
    """The first file on the stack outside gradio and the web UI's pass-throughs to it (these translations, the
    component hooks, A1111's component classes): the file whose code built the component."""
    frame = sys._getframe(1)
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if not name.startswith(_GRADIO_FOLDER) and name not in _PASS_THROUGH:
            return name
        frame = frame.f_back
    return ""


def _notice(what: str, consequence: str) -> None:
    if what not in noticed:
        noticed[what] = _caller()
        log.warning("%s (Gradio 3) in %s: %s", what, noticed[what] or "?", consequence)


@functools.lru_cache(maxsize=None)
def _parameters(function) -> tuple[frozenset, bool]:
    parameters = inspect.signature(function).parameters.values()
    return (frozenset(p.name for p in parameters),
            any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters))


def _translating_init(cls: type, original):
    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **_component_keywords(cls, original, kwargs))

    return __init__


def _component_keywords(cls: type, original, kwargs: dict) -> dict:
    names, takes_any = _parameters(original)
    kwargs = _on_the_page(cls, names, kwargs)
    if takes_any or names.issuperset(kwargs):
        return kwargs
    kwargs = dict(kwargs)
    for key in A1111_KEYWORDS:
        if key not in names:
            kwargs.pop(key, None)
    source = kwargs.pop("source", None) if "source" not in names else None
    if source is not None and "sources" in names and "sources" not in kwargs:
        if source in _default_sources(original):   # Gradio 3's single source → Gradio 6's list, where it exists
            kwargs["sources"] = [source]
        else:
            _notice(f"{cls.__name__}(source={source!r})", "no such source in Gradio 6: the default sources are used")
    for key in [key for key in kwargs if key not in names]:
        _notice(f"{cls.__name__}({key}=)", "not a Gradio 6 argument: ignored")
        del kwargs[key]
    return kwargs


def _on_the_page(cls: type, names: frozenset, kwargs: dict) -> dict:
    """A block an extension builds reaches the page as in Gradio 3, whose JavaScript conventions extensions
    follow (a hidden textbox their script fills, a hidden button it clicks, an element of another tab it looks up):
    an invisible component is on the page, hidden ("hidden"; Gradio 6 leaves visible=False ones out), and so is an
    invisible row, column, group or accordion with what it holds (Gradio 6 shows a "hidden" layout, so the class
    HIDDEN_LAYOUT hides it until an update makes it visible); a tab's content is on the page before it is opened.
    Gradio rebuilds a block through this on each update (its arguments plus the update's), so the same rule
    hides or shows a layout again."""
    changes = {}
    if kwargs.get("visible") is False and "visible" in names and issubclass(cls, Component):
        changes["visible"] = "hidden"
    if _hides_by_class(cls, names):
        classes = _classes(kwargs.get("elem_classes"))
        if kwargs.get("visible") in (False, "hidden"):
            changes.update(visible="hidden", elem_classes=[*classes, HIDDEN_LAYOUT] if HIDDEN_LAYOUT not in classes
                           else classes)
        elif HIDDEN_LAYOUT in classes:
            changes["elem_classes"] = [name for name in classes if name != HIDDEN_LAYOUT]
    if "render_children" in names and "render_children" not in kwargs:
        changes["render_children"] = True
    if changes and not _caller().startswith(_PROJECT_CODE):
        return {**kwargs, **changes}
    return kwargs


# The class that hides an extension's invisible layout (style.css), which stays on the page as in Gradio 3.
HIDDEN_LAYOUT = "webui-hidden-layout"


def _hides_by_class(cls: type, names: frozenset) -> bool:
    return (issubclass(cls, BlockContext) and not issubclass(cls, (gr.Blocks, gr.Tab, gr.Tabs))
            and {"visible", "elem_classes"} <= names)


def _classes(elem_classes) -> list[str]:
    if not elem_classes:
        return []
    return [elem_classes] if isinstance(elem_classes, str) else list(elem_classes)


def _tabs_holding_tabs_only(original):
    """Gradio 3 let a component sit in a Tabs beside its tabs (Image Browser keeps a hidden textbox there); in
    Gradio 6 it becomes a tab of its own that shifts the others (the tab bar then shows one tab twice and loses
    another). An extension's such component goes just before its Tabs instead."""
    @functools.wraps(original)
    def __exit__(self, exc_type=None, *args):
        if exc_type is None and self.parent is not None and not _caller().startswith(_PROJECT_CODE):
            others = [child for child in self.children if not isinstance(child, gr.Tab)]
            if others:
                self.children = [child for child in self.children if isinstance(child, gr.Tab)]
                siblings = self.parent.children
                where = siblings.index(self) if self in siblings else len(siblings)
                siblings[where:where] = others
                for child in others:
                    child.parent = self.parent
        return original(self, exc_type, *args)

    return __exit__


def _postprocessing_layout_classes(original):
    """An update of a layout's visibility also sends its classes, which say whether it is hidden (see
    _on_the_page): Gradio sends only the properties the update names."""
    @functools.wraps(original)
    def postprocess_update_dict(block, update_dict: dict, postprocess: bool = True):
        if "visible" in update_dict and _hides_by_class(type(block), _parameters(type(block).__init__)[0]):
            update_dict = {**update_dict, "elem_classes": None}   # the value sent is read from the block
        return original(block, update_dict, postprocess)

    return postprocess_update_dict


# The sources of the components whose `sources=None` means all of them (the others list theirs as the default).
ALL_SOURCES = {"image": ("upload", "webcam", "clipboard"), "video": ("upload", "webcam"),
               "audio": ("upload", "microphone")}


@functools.lru_cache(maxsize=None)
def _default_sources(function) -> tuple:
    default = inspect.signature(function).parameters["sources"].default
    if isinstance(default, (list, tuple)) and default:
        return tuple(default)
    return ALL_SOURCES.get(function.__qualname__.split(".")[0].lower(), ())


def _translating_event(original):
    if getattr(original, "translates_gradio3", False):
        return original

    @functools.wraps(original)
    def event(block, *args, **kwargs):
        return original(block, *args, **_event_keywords(original, kwargs))

    event.translates_gradio3 = True
    return event


def _event_keywords(original, kwargs: dict) -> dict:
    names, takes_any = _parameters(original)
    if takes_any or (names.issuperset(kwargs) and not isinstance(kwargs.get("show_progress"), bool)
                     and kwargs.get("api_name") is not False):
        return kwargs
    kwargs = dict(kwargs)
    if "_js" in kwargs:
        kwargs.setdefault("js", kwargs.pop("_js"))
    if isinstance(kwargs.get("show_progress"), bool):
        kwargs["show_progress"] = "full" if kwargs["show_progress"] else "hidden"
    if kwargs.get("api_name") is False:   # Gradio 3/4: no API endpoint
        del kwargs["api_name"]
        kwargs.setdefault("api_visibility", "private")
    if "show_api" in kwargs and "show_api" not in names:   # Gradio 4/5: callable, not listed
        if not kwargs.pop("show_api"):
            kwargs.setdefault("api_visibility", "undocumented")
    for key in [key for key in kwargs if key not in names]:
        _notice(f".{getattr(original, 'event_name', 'event')}({key}=)", "not a Gradio 6 event argument: ignored")
        del kwargs[key]
    return kwargs


_NO_VALUE = object()


def _update(value: Any = _NO_VALUE, **kwargs) -> dict:
    """Gradio 3's `gr.Textbox.update(value, **props)`: Gradio 6's `gr.update` (hiding keeps it on the page, as
    Gradio 3 did)."""
    if value is not _NO_VALUE:
        kwargs["value"] = value
    if kwargs.get("visible") is False:
        kwargs["visible"] = "hidden"
    return gr.update(**kwargs)


def _style(self, *args, **kwargs):
    """Gradio 3's `.style(...)`: each keyword that is a Gradio 6 argument of this block is set on it (the page's
    config reads the attributes); the others are ignored."""
    names, _ = _parameters(subclasses.gradio_base(type(self)).__init__)
    for key, value in kwargs.items():
        name = STYLE_NAMES.get(key, key)
        if key == "grid" and isinstance(value, (list, tuple)):
            value = value[-1] if value else None   # per screen width in Gradio 3: the widest
        if key == "full_width":
            value = 1 if value else 0
        if name in names and name not in ("value", "elem_id", "render"):
            setattr(self, name, value)
        else:
            _notice(f".style({key}=)", "no Gradio 6 equivalent: ignored")
    return self


def _add_removed_names() -> None:
    aliases = {"Box": gr.Group, "Variable": gr.State}
    for name, target in aliases.items():
        if not hasattr(gr, name):
            setattr(gr, name, target)
    if not hasattr(gr.components, "IOComponent"):
        gr.components.IOComponent = Component
    for name, names in (("inputs", _INPUTS), ("outputs", _OUTPUTS)):
        if not hasattr(gr, name):
            module = types.ModuleType(f"gradio.{name}", f"Gradio 2/3's gr.{name}: the components themselves")
            for component in names:
                if hasattr(gr, component):
                    setattr(module, component, _legacy_factory(getattr(gr, component)))
            setattr(gr, name, module)
            sys.modules[module.__name__] = module


_INPUTS = ("Textbox", "Number", "Slider", "Checkbox", "CheckboxGroup", "Radio", "Dropdown", "Image", "Video",
           "Audio", "File", "Dataframe", "Timeseries", "State")
_OUTPUTS = ("Textbox", "Image", "Video", "Audio", "File", "Dataframe", "Timeseries", "State", "Label",
            "HighlightedText", "JSON", "HTML", "Chatbot", "Carousel")


def _legacy_factory(component: type):
    """gr.inputs.Textbox(default=..., optional=...) → gr.Textbox(value=...)."""
    @functools.wraps(component)
    def create(*args, default: Any = None, optional: bool = False, **kwargs):
        if default is not None:
            kwargs.setdefault("value", default)
        return component(*args, **kwargs)

    return create
