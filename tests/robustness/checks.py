"""What the robustness tests share: the small request they start from, images as a client sends them, a JSON body
written by hand, the checks of A1111's error shape and of a server still serving, and a spy on every file opened."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import sys

from PIL import Image

SMALL = {"prompt": "a cube", "width": 64, "height": 64, "steps": 2}

_opened: list[str] | None = None
_hooked = False


def _record_opens(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.path.realpath(os.fsdecode(args[0])))


@contextlib.contextmanager
def opened_files():
    """Every path opened meanwhile, by any thread. An audit hook sees open() also from C code; hooks cannot be
    removed, so the one hook records only inside this block."""
    global _opened, _hooked
    if not _hooked:
        sys.addaudithook(_record_opens)
        _hooked = True
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def photo() -> str:
    return b64(png(Image.new("RGB", (64, 64), (200, 120, 40))))


def post_json(server, path: str, raw: str):
    """A body written by hand: NaN, Infinity and 1e309 are JSON a client can send, which `json=` cannot."""
    return server.post(path, content=raw, headers={"Content-Type": "application/json"})


def assert_names_field(response, *field: str | int) -> None:
    """A 4xx in A1111's error shape whose detail points at `field` (the last parts of a `loc`)."""
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "body", "errors"}, body
    detail = body["detail"]
    assert isinstance(detail, list) and detail, body
    locs = [item["loc"] for item in detail]
    assert any(loc[0] == "body" and loc[-len(field):] == list(field) for loc in locs), locs


def assert_still_serving(server) -> None:
    response = server.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 1, "seed": 1})
    assert response.status_code == 200, response.text


def info_of(response) -> dict:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])
