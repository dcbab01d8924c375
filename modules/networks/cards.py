"""Extra Networks cards: what the UI's Textual Inversion / Hypernetworks / Checkpoints / Lora tabs show.

A1111 (`modules/ui_extra_networks*.py`, `extensions-builtin/Lora/ui_extra_networks_lora.py`) behaviour, as
plain data: one `Card` per item of a registry, with its preview image (`<stem>.png`, `<stem>.preview.png`,
also .jpg/.jpeg/.webp/.gif, next to the file), its description (`<stem>.txt`, `<stem>.description.txt`, or
the user metadata "description"), sort keys, search text, and the text a click puts into the prompt.

User metadata is A1111's `<stem>.json` beside the file ("description", "activation text", "preferred
weight", "negative text", "notes", and "vae" for checkpoints).

Cards come only from the registries: a name the browser sends back is looked up among the listed cards,
never turned into a path. Everything that goes into HTML is escaped here.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.untrusted import user_files
from modules.untrusted.json_file import read_json_object, write_json_atomically

log = logging.getLogger(__name__)

# Tab ids (A1111's extra-network page names) → tab titles, in A1111's order.
TEXTUAL_INVERSION, HYPERNETWORKS, CHECKPOINTS, LORA = "textual_inversion", "hypernetworks", "checkpoints", "lora"
KINDS = {TEXTUAL_INVERSION: "Textual Inversion", HYPERNETWORKS: "Hypernetworks", CHECKPOINTS: "Checkpoints",
         LORA: "Lora"}

PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")
SORT_MODES = ("Path", "Name", "Date Created", "Date Modified")
DEFAULT_WEIGHT = 1.0

# User metadata: the keys A1111 writes, and what each may hold.
TEXT_KEYS = ("description", "activation text", "negative text", "notes")
WEIGHT_KEY = "preferred weight"
VAE_KEY = "vae"
KNOWN_KEYS = (*TEXT_KEYS[:2], WEIGHT_KEY, *TEXT_KEYS[2:], VAE_KEY)
MAX_TEXT = 20_000                # characters of one metadata value
MAX_DESCRIPTION_FILE = 64 * 1024  # bytes read from a <stem>.txt
MIN_WEIGHT, MAX_WEIGHT = 0.0, 2.0

THUMBNAIL_SIZE = 256
MAX_PREVIEW_BYTES = 50 * 1024 * 1024
MAX_PREVIEW_PIXELS = 64 * 1024 * 1024


# --------------------------------------------------------------------------- files beside a model

def _base(path: Path) -> Path:
    """The file without its extension, as A1111's `os.path.splitext(path)[0]`."""
    path = Path(path)
    return path.with_name(path.name[: len(path.name) - len(path.suffix)] if path.suffix else path.name)


def metadata_path(path: Path) -> Path:
    """A1111's user metadata file: `<stem>.json` next to the model file."""
    base = _base(path)
    return base.with_name(base.name + ".json")


def find_preview(path: Path) -> Path | None:
    """The first of `<stem>.png`, `<stem>.preview.png`, `<stem>.jpg`, ... that is a file (A1111's order)."""
    base = _base(path)
    for extension in PREVIEW_EXTENSIONS:
        for name in (f"{base.name}.{extension}", f"{base.name}.preview.{extension}"):
            candidate = base.with_name(name)
            if candidate != Path(path) and candidate.is_file():
                return candidate
    # A PNG textual-inversion embedding is its own picture (A1111 shows it as the card's preview).
    if Path(path).suffix.lower() == ".png" and Path(path).is_file():
        return Path(path)
    return None


def find_description(path: Path) -> str:
    """The text of `<stem>.txt` or `<stem>.description.txt` (A1111), or ""."""
    base = _base(path)
    for name in (f"{base.name}.txt", f"{base.name}.description.txt"):
        candidate = base.with_name(name)
        try:
            data = user_files.read_bytes(candidate, MAX_DESCRIPTION_FILE)
        except OSError:
            continue
        return data.decode("utf-8", errors="replace").strip()
    return ""


# --------------------------------------------------------------------------- user metadata

def _check_text(key: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected text, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{key}: longer than {MAX_TEXT} characters")
    return value


def _check_weight(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{WEIGHT_KEY}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{WEIGHT_KEY}: expected a number, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"{WEIGHT_KEY}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{WEIGHT_KEY}: must be a finite number")
    if not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise ValueError(f"{WEIGHT_KEY}: must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g} (got {value:g})")
    return value


def validate_user_metadata(data: dict, *, vae_choices: Iterable[str] | None = None) -> dict:
    """The known keys of `data`, checked and normalised; ValueError names the first bad key.

    Texts must be strings (None counts as ""); "preferred weight" a finite number 0–2 (or empty);
    "vae" one of `vae_choices` when those are given. Unknown keys are left out.
    """
    if not isinstance(data, dict):
        raise ValueError("user metadata must be an object")
    checked: dict[str, Any] = {}
    for key in TEXT_KEYS:
        if key in data:
            checked[key] = _check_text(key, data[key])
    if WEIGHT_KEY in data:
        weight = _check_weight(data[WEIGHT_KEY])
        if weight is not None:
            checked[WEIGHT_KEY] = weight
    if VAE_KEY in data and data[VAE_KEY] not in (None, ""):
        vae = _check_text(VAE_KEY, data[VAE_KEY])
        choices = list(vae_choices) if vae_choices is not None else None
        if choices is not None and vae not in choices:
            raise ValueError(f"{VAE_KEY}: unknown VAE {vae!r}")
        checked[VAE_KEY] = vae
    return checked


def read_user_metadata(path: Path) -> dict:
    """The user metadata of a model file (`<stem>.json`): known keys with valid values; {} if none.

    A damaged file or a bad value never breaks a listing: bad values are left out (and logged).
    """
    raw = read_json_object(metadata_path(path))
    result: dict[str, Any] = {}
    for key in KNOWN_KEYS:
        if key not in raw:
            continue
        try:
            result.update(validate_user_metadata({key: raw[key]}))
        except ValueError as error:
            log.warning("%s: ignoring %s", metadata_path(path), error)
    return result


def write_user_metadata(path: Path, data: dict, *, vae_choices: Iterable[str] | None = None) -> dict:
    """Validate `data` and write it to `<stem>.json` atomically; returns what was stored.

    Only known keys are taken from `data`; keys already in the file that this project does not edit (A1111
    writes e.g. "sd version") are kept. An empty text or weight removes that key.
    """
    checked = validate_user_metadata(data, vae_choices=vae_choices)
    target = metadata_path(path)
    stored = {key: value for key, value in read_json_object(target).items() if key not in KNOWN_KEYS}
    for key in KNOWN_KEYS:
        value = checked.get(key)
        if value not in (None, ""):
            stored[key] = value
    write_json_atomically(target, stored)
    return {key: stored[key] for key in KNOWN_KEYS if key in stored}


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
        name = str(_base(Path(info.name)).as_posix())
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


# --------------------------------------------------------------------------- thumbnails

class ThumbnailCache:
    """Small JPEG previews as `data:` URIs, made with Pillow and kept per file version (path, mtime, size).

    The browser gets the pixels inside the page: no model folder is served over HTTP.
    """

    def __init__(self, size: int = THUMBNAIL_SIZE, max_items: int = 4096):
        self.size = size
        self.max_items = max_items
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, str | None] = OrderedDict()

    def get(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        uri = make_thumbnail(Path(path), self.size) if stat.st_size <= MAX_PREVIEW_BYTES else None
        with self._lock:
            self._items[key] = uri
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return uri


def make_thumbnail(path: Path, size: int = THUMBNAIL_SIZE) -> str | None:
    """A JPEG of at most `size`×`size` pixels as a data URI, or None for anything that is not a sane image."""
    from PIL import Image, ImageOps

    try:
        with (user_files.open_regular(path) as handle,
              Image.open(handle, formats=["PNG", "JPEG", "WEBP", "GIF"]) as image):
            width, height = image.size
            if width <= 0 or height <= 0 or width * height > MAX_PREVIEW_PIXELS:
                log.warning("preview %s: %dx%d is too large to show", path, width, height)
                return None
            image.draft("RGB", (size, size))
            image.seek(0)
            image = ImageOps.exif_transpose(image) or image
            image.thumbnail((size, size))
            if image.mode in ("RGBA", "LA", "P"):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (40, 40, 40, 255))
                image = Image.alpha_composite(background, image)
            image = image.convert("RGB")
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
    except Exception as error:  # noqa: BLE001 - a broken preview must never break the listing
        log.warning("preview %s cannot be read: %s", path, error)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- HTML

def card_html(card: Card, thumbnail: str | None) -> str:
    """One card; every text is escaped (names and descriptions come from users' files)."""
    esc = html.escape
    action = "Switch to this checkpoint" if card.kind == CHECKPOINTS else "Add to prompt (click again to remove)"
    hover = card.name if not card.description else f"{card.name}\n{card.description}"
    if thumbnail and thumbnail.startswith("data:image/jpeg;base64,"):
        picture = f'<img class="preview" src="{esc(thumbnail)}" alt="" loading="lazy" draggable="false">'
    else:
        picture = '<div class="preview no-preview"></div>'
    description = f'<span class="description">{esc(card.description)}</span>' if card.description else ""
    return (f'<div class="card{" has-preview" if "<img" in picture else ""}" role="button" tabindex="0" '
            f'data-kind="{esc(card.kind)}" data-key="{esc(card.key)}" title="{esc(hover)}" '
            f'aria-label="{esc(action)}: {esc(card.name)}">'
            f'{picture}'
            f'<div class="button-row"><span class="card-button edit-button" role="button" data-action="edit" '
            f'title="Edit metadata">🛠️</span></div>'
            f'<div class="actions"><span class="name">{esc(card.name)}</span>{description}</div>'
            f'</div>')


def cards_html(cards: list[Card], kind: str, thumbnails: ThumbnailCache | None = None, *,
               folder_hint: str = "") -> str:
    """The cards of a tab, or A1111's "Nothing here" text with where to put files."""
    if not cards:
        where = f" Add files to {html.escape(folder_hint)} and press 🔄." if folder_hint else ""
        return (f'<div class="extra-network-cards empty" data-kind="{html.escape(kind)}">'
                f'<div class="nocards">Nothing here.{where}</div></div>')
    body = "".join(card_html(card, thumbnails.get(card.preview) if thumbnails else None) for card in cards)
    return f'<div class="extra-network-cards" data-kind="{html.escape(kind)}">{body}</div>'
