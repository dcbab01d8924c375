"""Component classes defined outside gradio (`class ToolButton(gr.Button)` in an extension, A1111's
`modules.ui_components`) render as the Gradio component they derive from.

Gradio 6 would otherwise take such a class for a custom component: its type on the page is the class name
(`toolbutton`), whose code the page asks the server for and does not get, so the component never shows; the
page's config would also hold only the arguments of the subclass's own `__init__` (none, for `*args,
**kwargs`); its metaclass would drop positional arguments passed through `*args` and write a `.pyi` file beside
the extension's script. `install()` (from `gradio3.install`) makes each of these follow the nearest Gradio
class instead, for every class not defined in gradio itself. A subclass that names its block itself
(`get_block_name`, as A1111's do) keeps its own.
"""
from __future__ import annotations

import functools
import sys

import gradio as gr
from gradio import component_meta
from gradio.blocks import Block, Blocks

_installed = False


def is_gradio(cls: type) -> bool:
    return cls.__module__ == "gradio" or cls.__module__.startswith("gradio.")


@functools.lru_cache(maxsize=None)
def gradio_base(cls: type) -> type:
    """The Gradio component or layout `cls` is (itself when gradio defines it): the first class of its MRO that
    gradio exports by name (gr.Button, gr.Row), past mixins like gradio's FormComponent."""
    if is_gradio(cls):
        return cls
    for base in cls.__mro__:
        if is_gradio(base) and getattr(gr, base.__name__, None) is base:
            return base
    return next(base for base in cls.__mro__ if is_gradio(base))


def _block_name(cls: type) -> str:
    # Gradio's own rule for its classes: a template (gr.TextArea) is its base (textbox)
    return (cls.__base__ if hasattr(cls, "is_template") else cls).__name__.lower()


# Where Gradio rebuilds a component to apply an update, as `type(block)(**block.constructor_args, **update)`.
_REBUILDERS = (Blocks.postprocess_data.__code__,)


def _rebuildable(init):
    """A subclass's __init__, except when Gradio rebuilds the component for an update: it passes the Gradio
    component's own arguments (what `constructor_args` recorded), which the subclass's __init__ would add to
    again (DropdownMulti's multiselect=True twice), so the Gradio component's __init__ takes them."""
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if sys._getframe(1).f_code in _REBUILDERS:
            return gradio_base(type(self)).__init__(self, *args, **kwargs)
        return init(self, *args, **kwargs)

    return __init__


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    original_block_name, original_block_class = Block.get_block_name, Block.get_block_class
    original_config = Block.get_config

    def get_block_name(self) -> str:
        cls = type(self)
        return original_block_name(self) if is_gradio(cls) else _block_name(gradio_base(cls))

    def get_block_class(self) -> str:
        cls = type(self)
        return original_block_class(self) if is_gradio(cls) else _block_name(gradio_base(cls))

    def get_config(self, cls: type | None = None) -> dict:
        if cls is None and not is_gradio(type(self)):
            cls = gradio_base(type(self))   # its arguments are the Gradio component's
        return original_config(self, cls)

    Block.get_block_name, Block.get_block_class, Block.get_config = get_block_name, get_block_class, get_config
    original_updateable, original_pyi = component_meta.updateable, component_meta.create_or_modify_pyi

    def updateable(fn):
        # Gradio's wrapper records constructor arguments by name, losing what a subclass passes on through *args:
        # the Gradio class's own __init__ below it records them instead
        return original_updateable(fn) if fn.__module__.startswith("gradio") else _rebuildable(fn)

    def create_or_modify_pyi(component_class, class_name, events):
        if is_gradio(component_class):
            original_pyi(component_class, class_name, events)

    component_meta.updateable, component_meta.create_or_modify_pyi = updateable, create_or_modify_pyi
