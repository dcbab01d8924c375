"""One option's definition, A1111's `OptionInfo`: its default, label, section and bounds, the UI component
extensions give it, and the check a new value must pass (`validate`)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

log = logging.getLogger(__name__)


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
