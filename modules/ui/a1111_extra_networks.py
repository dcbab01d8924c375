"""A1111's `modules.ui_extra_networks` for extensions: `ExtraNetworksPage`, the base class of an Extra Networks tab,
`register_page(page)` and `extra_pages`.

An extension's page lists its items as A1111's dicts (`name`, `filename`, `preview`, `description`,
`search_terms`, `prompt` — a JavaScript expression built with `quote_js`, e.g.
`quote_js("<lora:x:") + " + opts.extra_networks_default_multiplier + " + quote_js(">")`). `cards_of(page,
options)` turns them into the project's cards (`modules.networks.cards.Card`): the prompt expression is evaluated
here (quoted strings and `opts.<setting>` joined by `+`), never run as code; an item whose prompt is anything else
gets no prompt text. The project's own tabs (Textual Inversion, Checkpoints, Lora, Hypernetworks) are not pages:
`extra_pages` holds only the extensions' ones.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from modules.addons.missing_names import missing_name
from modules.networks import cards

log = logging.getLogger(__name__)

extra_pages: list["ExtraNetworksPage"] = []
allowed_dirs: set[str] = set()
default_allowed_preview_extensions = ["png", "jpg", "jpeg", "webp", "gif"]


def allowed_preview_extensions() -> list[str]:
    return list(default_allowed_preview_extensions)


def quote_js(s) -> str:
    """A1111's: a string as a JavaScript string literal."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def register_page(page: "ExtraNetworksPage") -> None:
    """A1111's: add an extension's page (A1111 recommends doing it in `on_before_ui`)."""
    extra_pages.append(page)
    allowed_dirs.clear()
    allowed_dirs.update(folder for registered in extra_pages for folder in registered.allowed_directories_for_previews())


class _PageClass(type):
    def __getattr__(cls, name):
        """A1111's page methods that build its own HTML (`create_html`, `create_card_view_html`, …) are not here."""
        if name.startswith("__"):
            raise AttributeError(name)
        raise missing_name("modules.ui_extra_networks.ExtraNetworksPage", name,
                           "the cards' HTML is the web UI's own (modules/networks/cards)")


class ExtraNetworksPage(metaclass=_PageClass):
    """A1111's base class: override `list_items()` (yield item dicts), `create_item(name, index=None)`,
    `refresh()`, `allowed_directories_for_previews()`."""

    def __init__(self, title):
        self.title = title
        self.name = title.lower()
        self.extra_networks_tabname = self.name.replace(" ", "_")
        self.allow_prompt = True
        self.allow_negative_prompt = False
        self.metadata = {}
        self.items = {}

    def refresh(self):
        pass

    def create_item(self, name, index=None):
        raise NotImplementedError()

    def list_items(self):
        raise NotImplementedError()

    def allowed_directories_for_previews(self):
        return []

    def read_user_metadata(self, item, use_cache=True):
        """A1111's: the `<stem>.json` user metadata beside the item's file into `item["user_metadata"]`."""
        filename = item.get("filename")
        metadata = cards.read_user_metadata(Path(filename)) if filename else {}
        if metadata.get("description") is not None:
            item["description"] = metadata["description"]
        item["user_metadata"] = metadata

    def link_preview(self, filename):
        """The preview's file: the project's cards embed previews in the page (model folders are never served)."""
        return str(filename)

    def search_terms_from_path(self, filename, possible_directories=None):
        absolute = os.path.abspath(filename)
        for folder in possible_directories if possible_directories is not None else \
                self.allowed_directories_for_previews():
            parent = os.path.dirname(os.path.abspath(folder))
            if absolute.startswith(parent):
                return os.path.relpath(absolute, parent)
        return ""

    def get_sort_keys(self, path):
        stat = Path(path).stat() if Path(path).exists() else None
        return {"date_created": int(stat.st_ctime) if stat else 0, "date_modified": int(stat.st_mtime) if stat else 0,
                "name": Path(path).name.lower(), "path": str(path).lower()}

    def find_preview(self, path):
        for extension in allowed_preview_extensions():
            for candidate in (f"{path}.{extension}", f"{path}.preview.{extension}"):
                if os.path.isfile(candidate):
                    return self.link_preview(candidate)
        return None

    def find_description(self, path):
        for candidate in (f"{path}.txt", f"{path}.description.txt"):
            try:
                with open(candidate, encoding="utf-8", errors="replace") as file:
                    return file.read(cards.MAX_DESCRIPTION_FILE)
            except OSError:
                continue
        return None


# ---------------------------------------------------------------- pages → the project's cards

_TOKEN = re.compile(r'\s*(?:("(?:\\.|[^"\\])*")|opts\.(\w+)|(\+))')


def prompt_text(expression, options) -> str | None:
    """An item's `prompt` JavaScript expression as text: quoted strings and `opts.<setting>` joined by `+`, as A1111's
    pages write them; None for anything else (it is not run)."""
    if not isinstance(expression, str) or not expression.strip():
        return None
    parts, position, expect_value = [], 0, True
    while position < len(expression.rstrip()):
        match = _TOKEN.match(expression, position)
        if match is None or bool(match.group(3)) == expect_value:
            return None
        if match.group(1):
            parts.append(json.loads(match.group(1)))
        elif match.group(2):
            value = options.get(match.group(2))
            if value is None:
                return None
            parts.append(str(value))
        expect_value = not expect_value
        position = match.end()
    return None if expect_value else "".join(parts)


def cards_of(page: ExtraNetworksPage, options) -> list[cards.Card]:
    """The page's items (`list_items()`) as cards of the kind `page.extra_networks_tabname`."""
    found = []
    page.items = {}
    for item in page.list_items():
        name = str(item.get("name", ""))
        page.items[name] = item
        filename = Path(item["filename"]) if item.get("filename") else Path(name)
        preview = item.get("local_preview") or item.get("preview")
        preview = Path(preview) if preview and Path(str(preview)).is_file() else None
        text = prompt_text(item.get("prompt"), options) if page.allow_prompt else None
        stat = filename.stat() if filename.is_file() else None
        terms = item.get("search_terms") or []
        terms = [str(term) for term in (terms if isinstance(terms, (list, tuple)) else [terms]) if term]
        found.append(cards.Card(
            kind=page.extra_networks_tabname, key=name, name=name, path=filename,
            relative=terms[0] if terms else name, preview=preview,
            description=str(item.get("description") or ""), mtime=stat.st_mtime if stat else 0.0,
            ctime=stat.st_ctime if stat else 0.0, search_text=" ".join([name, *terms]).lower(), prompt=text,
            negative=(prompt_text(item.get("negative_prompt"), options) or "") if page.allow_negative_prompt else "",
            remove_pattern=re.escape(text) if text else "", user_metadata=dict(item.get("user_metadata") or {})))
    return found
