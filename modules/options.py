"""The settings registry: every option's key, default, label, section and type, persisted to config.json.

Keys are A1111's (`modules/shared_options.py`) so `/sdapi/v1/options` clients and `override_settings`
work unchanged. Options marked `restrict_api` (output folders, filename patterns) cannot be changed
over the API, as in A1111, because a writable output path is a file-write primitive.

`OPTIONS` is the built-in table (`modules/settings/table.py`, with `SECTIONS`; an option's definition is
`OptionInfo`, `modules/settings/option_info.py`); each `Options` object starts from it and takes more through
`add_option` (extensions, from `on_ui_settings`). Everything that validates reads the object's own registry.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from modules.untrusted import json_file, user_files
from modules.untrusted.json_file import write_json_atomically
from modules.settings.option_info import OptionInfo
from modules.settings.table import OPTIONS, SECTIONS

log = logging.getLogger(__name__)


def comma_list(text: str | None) -> list[str]:
    """A comma-separated flag value ("sd, ui") as a list, blanks dropped."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


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
