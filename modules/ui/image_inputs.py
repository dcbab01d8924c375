"""The UI's image inputs: gr.Image and gr.ImageEditor that check an upload when it arrives and say plainly which
input refused it, and why.

A file that is not an image (a text file renamed .png) is refused at the upload: a one-line warning names the
input and the file, and the input is emptied, so no broken image stays on the page to fail a later Generate
with Gradio's developer message (its temporary paths, every input of the event). Should such a file reach an
event anyway, the input reads as empty (never an error of the event), so an input that does not count, such
as a disabled ControlNet unit's image, never blocks a generation.

Pillow refuses an image over the project's cap when Gradio opens an upload (images.cap_decoding), before decoding
it; Gradio would report that as a developer's message naming its temporary file. These name the input and the
limit instead.
"""
from __future__ import annotations

import logging
import re

import gradio as gr
from PIL import Image, UnidentifiedImageError

from modules import images
from modules.images import MAX_INPUT_PIXELS
from modules.ui.common import PRIVATE
from modules.untrusted import user_files

log = logging.getLogger(__name__)
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError)


def _too_large(label: str | None, error: Exception) -> gr.Error:
    found = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return gr.Error(f"{label or 'Image'}: the image has {size}, more than the limit of {MAX_INPUT_PIXELS:,} "
                    f"({int(MAX_INPUT_PIXELS ** 0.5)}×{int(MAX_INPUT_PIXELS ** 0.5)}); use a smaller image")


def _files(payload) -> list[tuple[str, str]]:
    """(path, name the user gave it) of each file in an upload's raw payload: a gr.Image's file, or a
    gr.ImageEditor's background, layers and composite."""
    if payload is None:
        return []
    if isinstance(payload, (list, tuple)):
        return [found for item in payload for found in _files(item)]
    if not isinstance(payload, dict):
        payload = payload.model_dump() if hasattr(payload, "model_dump") else {"path": getattr(payload, "path", None)}
    if payload.get("path"):
        return [(str(payload["path"]), str(payload.get("orig_name") or "the file"))]
    return [found for key in ("background", "layers", "composite") for found in _files(payload.get(key))]


def unreadable_reason(path: str) -> str | None:
    """Why the uploaded file at `path` is not an image the generation can use (None: it is one)."""
    try:
        images.decode_image_bytes(user_files.read_bytes(path))
    except ValueError as error:
        return str(error)
    except OSError as error:
        return f"cannot read the file ({error.strerror or error})"
    return None


def upload_refusal(label: str, payload) -> str | None:
    """The one-line message for an upload that is not a usable image (None when every file of it is)."""
    for path, name in _files(payload):
        reason = unreadable_reason(path)
        if reason is not None:
            return f"{label}: “{name}” was not loaded: {reason}."
    return None


def named_refusals(component, name: str | None = None):
    """`component` (a gr.Image or gr.ImageEditor, built inside the page's gr.Blocks) with its uploads checked
    as they arrive and its refusals naming it (`name`, else its label) and the limit.

    Its preprocess is wrapped on the instance, not in a subclass: Gradio writes a .pyi stub beside the module of
    every Component subclass it imports, into the source tree."""
    label = name or component.label or "Image"
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except Image.DecompressionBombError as error:
            raise _too_large(label, error) from None
        except UNREADABLE as error:   # refused at its upload already: the input is empty
            log.warning("%s: an upload that is not a readable image was ignored (%s)", label,
                        type(error).__name__)
            return None

    def check_upload(payload):
        message = upload_refusal(label, payload)
        if message is None:
            return gr.skip()
        gr.Warning(message, title="Not an image", duration=15)
        return None

    component.preprocess = checked
    component.upload(check_upload, inputs=[component], outputs=[component], preprocess=False,
                     show_progress="hidden", api_visibility=PRIVATE)
    return component
