"""The cards of a tab: one `Card` per item of a registry (sort keys, search text, the text a click puts into the
prompt), searching and sorting them, and A1111's click that adds a card's text to the prompt or takes it out.

Cards come only from the registries: a name the browser sends back is looked up among the listed cards, never
turned into a path.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.networks.cards.files import (WEIGHT_KEY, find_description, find_preview, read_user_metadata,
                                          without_extension)

# Tab ids (A1111's extra-network page names) → tab titles, in A1111's order.
TEXTUAL_INVERSION, HYPERNETWORKS, CHECKPOINTS, LORA = "textual_inversion", "hypernetworks", "checkpoints", "lora"
KINDS = {TEXTUAL_INVERSION: "Textual Inversion", HYPERNETWORKS: "Hypernetworks", CHECKPOINTS: "Checkpoints",
         LORA: "Lora"}

SORT_MODES = ("Path", "Name", "Date Created", "Date Modified")
DEFAULT_WEIGHT = 1.0


# --------------------------------------------------------------------------- cards

@dataclass
class Card:
    kind: str                     # one of KINDS
    key: str                      # unique within its kind: what the browser sends back
    name: str                     # shown on the card
    path: Path                    # the model file (from a registry)
    relative: str                 # path below its folder, for sorting by Path
    preview: Path | None
    description: str
    mtime: float
    ctime: float
    search_text: str              # lower case
    prompt: str | None            # what a click adds to the prompt (None: a click does something else)
    negative: str = ""            # what a click adds to the negative prompt
    remove_pattern: str = ""      # regex matching what a click added, to take it out again (A1111 toggles)
    user_metadata: dict = field(default_factory=dict)
    title: str = ""               # checkpoints: the title to switch to


def format_weight(weight: float) -> str:
    return f"{weight:.4f}".rstrip("0").rstrip(".") or "0"


def preferred_weight(metadata: dict) -> float:
    """A1111: a preferred weight of 0 (the editor's default) means "not set": the default multiplier."""
    weight = metadata.get(WEIGHT_KEY)
    return float(weight) if weight else DEFAULT_WEIGHT


def _stat_times(path: Path) -> tuple[float, float]:
    try:
        stat = Path(path).stat()
    except OSError:
        return 0.0, 0.0
    return stat.st_mtime, stat.st_ctime


def _relative(path: Path, folders: Iterable[Path]) -> str:
    """The path below the first folder holding it (registries may give resolved paths), else the file name."""
    for folder in folders:
        for base in (Path(folder), Path(folder).resolve()):
            try:
                return Path(path).relative_to(base).as_posix()
            except ValueError:
                continue
    return Path(path).name


def _make_card(kind: str, key: str, name: str, path: Path, relative: str, *, extra_search: Iterable[str] = (),
               tag: tuple[str, str, list[str]] | None = None, title: str = "") -> Card:
    """`tag`: (tag kind, name in the tag, names a removal may match) for `<lora:...>` / `<hypernet:...>`;
    None for an embedding, whose name itself is the prompt text."""
    metadata = read_user_metadata(path)
    description = metadata.get("description") or find_description(path)
    mtime, ctime = _stat_times(path)
    activation = (metadata.get("activation text") or "").strip()
    negative = (metadata.get("negative text") or "").strip()
    prompt: str | None = None
    pattern = ""
    if kind == CHECKPOINTS:
        pass
    elif tag is not None:
        tag_kind, tag_name, names = tag
        prompt = f"<{tag_kind}:{tag_name}:{format_weight(preferred_weight(metadata))}>"
        alternatives = "|".join(re.escape(n) for n in dict.fromkeys(names))
        pattern = f"<{re.escape(tag_kind)}:(?:{alternatives})(?::[^>]*)?>"
    else:
        prompt = name
        pattern = re.escape(name)
    if prompt is not None and activation:
        prompt = f"{prompt}, {activation}"
        pattern += r"(?:\s*,\s*" + re.escape(activation) + ")?"
    search = " ".join(part for part in (name, relative, description, activation, *extra_search) if part)
    return Card(kind=kind, key=key, name=name, path=Path(path), relative=relative, preview=find_preview(path),
                description=description, mtime=mtime, ctime=ctime, search_text=search.lower(), prompt=prompt,
                negative=negative, remove_pattern=pattern, user_metadata=metadata, title=title)


def available_kinds(networks) -> list[str]:
    """The tabs that work: Hypernetworks only where the backend lists them."""
    kinds = [TEXTUAL_INVERSION]
    if callable(getattr(getattr(networks, "hypernetworks", None), "items", None)):
        kinds.append(HYPERNETWORKS)
    return kinds + [CHECKPOINTS, LORA]


def _lora_cards(registry) -> list[Card]:
    cards = []
    for info in registry.items():
        # A1111's default "Alias from file", unless two files share that alias (then it would be ambiguous).
        tag_name = info.alias if info.alias and registry.find(info.alias) is info else info.name
        cards.append(_make_card(LORA, info.name, info.name, info.path, _relative(info.path, registry.folders),
                                extra_search=[info.alias], tag=("lora", tag_name, [info.name, info.alias])))
    return cards


def _embedding_cards(database) -> list[Card]:
    folder = Path(database.folder)
    return [_make_card(TEXTUAL_INVERSION, name, name, embedding.path, _relative(embedding.path, [folder]))
            for name, embedding in database.all.items()]


def _hypernetwork_cards(registry) -> list[Card]:
    cards = []
    folders = [Path(f) for f in (getattr(registry, "folders", None) or [getattr(registry, "folder", None)]) if f]
    for info in registry.items():
        path = Path(getattr(info, "path", None) or info.filename)
        name = getattr(info, "name", None) or path.stem
        cards.append(_make_card(HYPERNETWORKS, name, name, path, _relative(path, folders),
                                tag=("hypernet", name, [name])))
    return cards


def _checkpoint_cards(registry) -> list[Card]:
    cards = []
    for info in registry.items():
        name = str(without_extension(Path(info.name)).as_posix())
        cards.append(_make_card(CHECKPOINTS, info.name, name, info.filename, info.name,
                                extra_search=[info.title, info.sha256 or ""], title=info.title))
    return cards


def list_cards(kind: str, networks, checkpoints=None) -> list[Card]:
    """The cards of one tab, in the registry's order. Unknown kinds list nothing."""
    if kind == LORA:
        return _lora_cards(networks.loras)
    if kind == TEXTUAL_INVERSION:
        return _embedding_cards(networks.embeddings)
    if kind == CHECKPOINTS and checkpoints is not None:
        return _checkpoint_cards(checkpoints)
    if kind == HYPERNETWORKS and HYPERNETWORKS in available_kinds(networks):
        return _hypernetwork_cards(networks.hypernetworks)
    return []


def refresh(kind: str, networks, checkpoints=None) -> None:
    """Rescan the folder behind one tab (the 🔄 button)."""
    if kind == LORA:
        networks.loras.refresh()
    elif kind == TEXTUAL_INVERSION:
        networks.embeddings.refresh()
    elif kind == CHECKPOINTS and checkpoints is not None:
        checkpoints.refresh()
    elif kind == HYPERNETWORKS and HYPERNETWORKS in available_kinds(networks):
        getattr(networks.hypernetworks, "refresh", lambda: None)()


def find_card(cards: Iterable[Card], key: Any) -> Card | None:
    """The listed card with this key; anything else the browser sends finds nothing."""
    if not isinstance(key, str):
        return None
    return next((card for card in cards if card.key == key), None)


# --------------------------------------------------------------------------- search and sort

def filter_cards(cards: Iterable[Card], query: str | None) -> list[Card]:
    """Cards whose search text holds every word of the query (case-insensitive)."""
    words = (query or "").lower().split()
    return [card for card in cards if all(word in card.search_text for word in words)]


def _natural(text: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text.lower())]


def sort_cards(cards: Iterable[Card], mode: str = "Path", descending: bool = False) -> list[Card]:
    """A1111's sort modes: Path, Name, Date Created, Date Modified (ties by path)."""
    keys = {
        "Path": lambda card: (_natural(card.relative),),
        "Name": lambda card: (_natural(card.name), _natural(card.relative)),
        "Date Created": lambda card: (card.ctime, _natural(card.relative)),
        "Date Modified": lambda card: (card.mtime, _natural(card.relative)),
    }
    if mode not in keys:
        raise ValueError(f"unknown sort mode {mode!r}; choose one of {list(SORT_MODES)}")
    return sorted(cards, key=keys[mode], reverse=bool(descending))


# --------------------------------------------------------------------------- clicking a card

_BEFORE = r"(?:^|(?<=[\s,]))"
_AFTER = r"(?=$|[\s,])"


def _append(text: str, addition: str) -> str:
    text = (text or "").rstrip()
    if not text:
        return addition
    return f"{text} {addition}" if text.endswith(",") else f"{text}, {addition}"


def _remove(text: str, pattern: str) -> str | None:
    """`text` without the first stand-alone match of `pattern` and one separator next to it; None if absent."""
    if not pattern:
        return None
    found = re.search(_BEFORE + "(?:" + pattern + ")" + _AFTER, text or "")
    if found is None:
        return None
    left, right = text[:found.start()], text[found.end():]
    left_stripped, right_stripped = left.rstrip(), right.lstrip()
    comma = left_stripped.endswith(",") or right_stripped.startswith(",")
    gap = left[len(left_stripped):] + right[: len(right) - len(right_stripped)]
    left_stripped = left_stripped.rstrip(",").rstrip()
    right_stripped = right_stripped.lstrip(",").lstrip()
    if not left_stripped or not right_stripped:
        return left_stripped or right_stripped
    separator = ", " if comma else ("\n" if "\n" in gap else " ")
    return left_stripped + separator + right_stripped


def toggle_card(card: Card, prompt: str, negative: str) -> tuple[str, str]:
    """A1111's card click: add the card's text to the prompt (", "-separated), or take it out if it is there.

    The negative text (user metadata) follows: added with the prompt text unless present, removed with it.
    """
    if card.prompt is None:
        return prompt, negative
    prompt, negative = prompt or "", negative or ""
    removed = _remove(prompt, card.remove_pattern)
    if removed is not None:
        if card.negative:
            negative_removed = _remove(negative, re.escape(card.negative))
            negative = negative if negative_removed is None else negative_removed
        return removed, negative
    if card.negative and _remove(negative, re.escape(card.negative)) is None:
        negative = _append(negative, card.negative)
    return _append(prompt, card.prompt), negative
