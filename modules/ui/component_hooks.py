"""A1111's per-component hooks (its modules/gradio_extensons.py): every component and layout block the UI builds —
the web UI's own and extensions' — is announced before and after it is built.

For each one, with the keyword arguments it was built with (`kwargs.get("elem_id")` names it; A1111's elem_ids):

1. before: the scripts' `Script.on_before_component(callback, elem_id=...)` callbacks for its elem_id and each
   script's `before_component(component, **kwargs)`, then `script_callbacks.on_before_component` callbacks;
2. it is built (a component made in a "before" hook is placed before it);
3. after: `script_callbacks.on_after_component` callbacks, then the scripts' `on_after_component` callbacks for
   its elem_id and each script's `after_component(component, **kwargs)`.

The scripts are those of the tab the component is in (txt2img or img2img, as A1111's `scripts_current`); outside
those two tabs only the `script_callbacks` ones are called. A hook that raises, or wires an event to something
that is not a component, is logged (once), its events are removed and it is listed under its extension in the
Extensions tab; the page still builds. Each block also gets A1111's CSS classes (`gradio-button`,
`gradio-dropdown`, ..., `multiselect`), which extensions' CSS and JavaScript select by.
"""
from __future__ import annotations

import functools
import logging

from gradio.blocks import BlockContext
from gradio.components.base import Component
from gradio.context import Context, get_render_context

from modules.script_callbacks import error_line
from modules.scripts import OnComponent, Script
from modules.ui.scripts import check_events

log = logging.getLogger(__name__)

TAB_OF_RUNNER = {"tab_txt2img": "txt2img", "tab_img2img": "img2img"}   # the tabs' elem_ids → ScriptHost runner

_host = None        # the ScriptHost whose scripts and callbacks are called (the one loaded last)
_installed = False


def install(host) -> None:
    """Announce components to `host`'s scripts and callbacks from now on (patching gradio once per process)."""
    global _host, _installed
    _host = host
    if _installed:
        return
    _installed = True
    for cls in (Component, BlockContext):
        cls.__init__ = _announcing(cls.__init__)


def _announcing(original):
    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        host = _host
        # announced while a page is built, once (not when Gradio rebuilds one to apply an update to it)
        if host is None or Context.root_block is None or "_announced" in self.__dict__:
            return original(self, *args, **kwargs)
        self.__dict__["_announced"] = True
        runner = _runner_around(host, get_render_context())
        _before(host, runner, self, kwargs)
        result = original(self, *args, **kwargs)
        _add_a1111_classes(self)
        _after(host, runner, self, kwargs)
        return result

    return __init__


def _add_a1111_classes(block) -> None:
    """A1111 gives every block the class gradio-<type> (gradio-button, gradio-dropdown, ...) and a multiselect
    dropdown the class multiselect; extensions' CSS and JavaScript select by them."""
    added = [f"gradio-{block.get_block_name()}", *(["multiselect"] if getattr(block, "multiselect", False) else [])]
    block.elem_classes = [*added, *(name for name in block.elem_classes or [] if name not in added)]


def _runner_around(host, block):
    while block is not None:
        tab = TAB_OF_RUNNER.get(getattr(block, "elem_id", None))
        if tab is not None:
            return getattr(host, tab)
        block = block.parent
    return None


def _before(host, runner, component, kwargs: dict) -> None:
    if runner is not None:
        _scripts(runner, "before", component, kwargs.get("elem_id"), kwargs)
    _callbacks(host, "before_component", component, kwargs)


def _after(host, runner, component, kwargs: dict) -> None:
    _callbacks(host, "after_component", component, kwargs)
    if runner is not None:
        _scripts(runner, "after", component, getattr(component, "elem_id", None), kwargs)


def _callbacks(host, kind: str, component, kwargs: dict) -> None:
    callbacks = host.callbacks
    for item in callbacks.callbacks(kind) if callbacks.has(kind) else ():
        _isolated(callbacks.failures, (item.script, f"on_{kind} callback"), item.callback, (component,), kwargs)


def _scripts(runner, when: str, component, elem_id, kwargs: dict) -> None:
    for script in runner.scripts:
        for wanted, callback in (getattr(script, f"on_{when}_component_elem_id", None) or ()) if elem_id else ():
            if wanted == elem_id:
                _isolated(runner.failures, (script.filename, f"on_{when}_component callback"), callback,
                          (OnComponent(component=component),), {})
        hook = getattr(type(script), f"{when}_component", None)
        if hook is not getattr(Script, f"{when}_component"):   # most scripts have none: skip the bookkeeping
            _isolated(runner.failures, (script.filename, f"{when}_component()"),
                      getattr(script, f"{when}_component"), (component,), kwargs)


def _isolated(failures: dict, key: tuple[str, str], function, args: tuple, kwargs: dict) -> None:
    """Call one extension's hook; if it raises or wires an event to a non-component, undo its events and list it."""
    root = Context.root_block
    events_before = set(root.fns) if root is not None else set()
    try:
        function(*args, **kwargs)
        check_events(root, events_before)
    except Exception as error:
        if key not in failures:
            log.exception("Error in %s (%s); later errors of this hook are listed, not logged", key[1], key[0])
        for fn_id in set(root.fns) - events_before if root is not None else ():
            del root.fns[fn_id]
        failures[key] = error_line(error)
