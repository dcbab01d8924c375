"""ui-config.json: the default of each UI control, under A1111's keys ("txt2img/Sampling steps/value").

Once the page is built, `apply_ui_config(path, tabs)` walks the components of each top-level tab (the Settings
and Extensions tabs excepted, as in A1111) by their labels: a saved value becomes the component's initial value
when it suits the component (else a warning, and it is ignored), and the keys missing from the file are written
back, so the file lists every control a user can set. A damaged file is left as it is and the defaults are used.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr

from modules.system.sysinfo import jsonable
from modules.untrusted import json_file, user_files
from modules.untrusted.json_file import write_json_atomically

log = logging.getLogger(__name__)

SKIPPED_TABS = {"settings", "extensions"}
# Components whose visibility is kept, as A1111 does (only those shown at first).
VISIBLE_FIELD = (gr.Slider, gr.Radio, gr.Checkbox, gr.Textbox, gr.Number, gr.Dropdown, gr.Button)

Check = Callable[[Any], str | None]   # → why the value does not suit the component, or None


def read_ui_config(path: Path) -> tuple[dict, bool]:
    """(saved values, whether the file is usable); a missing file is usable and empty."""
    try:
        data = json_file.parse(user_files.read_text(path))
    except FileNotFoundError:
        return {}, True
    except (OSError, ValueError) as error:
        log.warning("%s is damaged (%s): using the built-in UI defaults, the file is left as it is", path, error)
        return {}, False
    if not isinstance(data, dict):
        log.warning("%s does not hold a JSON object: using the built-in UI defaults", path)
        return {}, False
    return data, True


def _choice_values(component) -> list:
    return [choice[1] if isinstance(choice, (tuple, list)) else choice for choice in (component.choices or [])]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bool(value) -> str | None:
    return None if isinstance(value, bool) else "not true or false"


def _number(value) -> str | None:
    return None if _is_number(value) else "not a number"


def _positive(value) -> str | None:
    return None if _is_number(value) and value > 0 else "not a positive number"


def _in_range(component) -> Check:
    def check(value):
        if not _is_number(value):
            return "not a number"
        low, high = getattr(component, "minimum", None), getattr(component, "maximum", None)
        if (low is not None and value < low) or (high is not None and value > high):
            return f"outside {low}..{high}"
        return None
    return check


def _text(value) -> str | None:
    return None if isinstance(value, str) else "not text"


def _one_of(component) -> Check:
    def check(value):
        choices = _choice_values(component)
        if getattr(component, "multiselect", False):
            if not isinstance(value, list):
                return "not a list"
            wrong = [item for item in value if item not in choices and not component.allow_custom_value]
            return f"{wrong[0]!r} is not a choice" if wrong else None
        if value in choices or (getattr(component, "allow_custom_value", False) and isinstance(value, str)):
            return None
        return "not one of the choices"
    return check


def _tab_id(tabs: gr.Tabs) -> Check:
    def check(value):
        ids = [child.id for child in tabs.children if isinstance(child, gr.Tab)]
        ok = value in ids if isinstance(value, str) else isinstance(value, int) and 0 <= value < len(ids)
        return None if ok else "not one of the tabs"
    return check


def fields(component) -> list[tuple[str, Check]]:
    """The fields A1111 keeps for a component, with their checks; a slider's bounds come before its value,
    which must lie within them. An extension's component marked do_not_save_to_config has none (A1111's rule)."""
    if getattr(component, "do_not_save_to_config", False):
        return []
    found = []
    if isinstance(component, VISIBLE_FIELD) and component.visible is True:
        found.append(("visible", _bool))
    if isinstance(component, gr.Slider):
        found += [("minimum", _number), ("maximum", _number), ("step", _positive), ("value", _in_range(component))]
    elif isinstance(component, gr.Number):
        found.append(("value", _in_range(component)))
    elif isinstance(component, gr.Checkbox):
        found.append(("value", _bool))
    elif isinstance(component, gr.Textbox):
        found.append(("value", _text))
    elif isinstance(component, (gr.Radio, gr.Dropdown)):
        found.append(("value", _one_of(component)))
    elif isinstance(component, gr.Tabs):
        found.append(("selected", _tab_id(component)))
    return found


def walk(block, path: str) -> Iterator[tuple[str, Any]]:
    """(A1111's key prefix, component) for every labelled component under `block`; buttons go by their text,
    sub-tabs by elem_id ("img2img/Tabs@mode_img2img")."""
    children = getattr(block, "children", None)
    if children is not None:
        if isinstance(block, gr.Tabs) and block.elem_id:
            yield f"{path}/Tabs@{block.elem_id}", block
        for child in children:
            yield from walk(child, path)
    elif getattr(block, "label", None):
        yield f"{path}/{block.label}", block
    elif isinstance(block, gr.Button) and block.value:
        yield f"{path}/{block.value}", block


def _set(component, field: str, value) -> None:
    setattr(component, field, component.postprocess(value) if field == "value" else value)


def apply_ui_config(path: Path, tabs: gr.Tabs) -> None:
    """Give the components under each top-level tab of `tabs` their saved defaults; write the missing keys."""
    saved, usable = read_ui_config(path)
    missing: dict[str, Any] = {}
    for tab in tabs.children:
        if not isinstance(tab, gr.Tab) or tab.id in SKIPPED_TABS:
            continue
        for prefix, component in walk(tab, str(tab.id)):
            for field, check in fields(component):
                key = f"{prefix}/{field}"
                if key not in saved:
                    current = getattr(component, field)
                    if current is None and field == "value" and isinstance(component, gr.Textbox):
                        current = ""   # Gradio keeps an empty text as None; A1111's file has ""
                    if key not in missing and jsonable(current):
                        missing[key] = current
                    continue
                if saved[key] is None:   # written for a control that had no value: nothing to apply
                    continue
                problem = check(saved[key])
                if problem:
                    log.warning("%s: %s = %r is %s; ignored", path.name, key, saved[key], problem)
                else:
                    _set(component, field, saved[key])
    if missing and usable:
        write_json_atomically(path, {**saved, **missing})
