"""The UI's image inputs: gr.Image and gr.ImageEditor that say plainly which input refused an upload, and why.

Pillow refuses an image over the project's cap when Gradio opens an upload (images.cap_decoding), before decoding
it; Gradio would report that as a developer's message naming its temporary file. These name the input and the
limit instead.
"""
from __future__ import annotations

import re

import gradio as gr
from PIL import Image

from modules.images import MAX_INPUT_PIXELS


def _too_large(label: str | None, error: Exception) -> gr.Error:
    found = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return gr.Error(f"{label or 'Image'}: the image has {size}, more than the limit of {MAX_INPUT_PIXELS:,} "
                    f"({int(MAX_INPUT_PIXELS ** 0.5)}×{int(MAX_INPUT_PIXELS ** 0.5)}); use a smaller image")


def named_refusals(component):
    """`component` (a gr.Image or gr.ImageEditor) with its upload refusals naming it and the limit.

    Its preprocess is wrapped on the instance, not in a subclass: Gradio writes a .pyi stub beside the module of
    every Component subclass it imports, into the source tree."""
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except Image.DecompressionBombError as error:
            raise _too_large(component.label, error) from None

    component.preprocess = checked
    return component
