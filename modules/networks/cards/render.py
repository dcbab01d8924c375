"""What the browser gets: small JPEG previews as `data:` URIs (no model folder is served over HTTP) and the
cards' HTML, every text in it escaped.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from modules.untrusted import user_files
from modules.networks.cards.listing import CHECKPOINTS, Card

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 256
MAX_PREVIEW_BYTES = 50 * 1024 * 1024
MAX_PREVIEW_PIXELS = 64 * 1024 * 1024


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
