"""A1111's `modules.extras`, for extensions: `run_pnginfo(image)`, what the PNG Info tab shows for an image.

A1111's `run_modelmerger` answers its Gradio components (dropdown updates); here merging is the Checkpoint Merger
tab's job (`modules/models/merger.py`), so it is not offered.
"""
from __future__ import annotations

import html

from modules import images
from modules.addons.missing_names import missing_name


def _html(text: str) -> str:
    return "<br>".join(html.escape(line) for line in text.split("\n"))


def run_pnginfo(image) -> tuple[str, str | None, str]:
    """A1111's ('', the infotext or None, an HTML listing of the image's text entries): the infotext ("parameters")
    first, then the image's other metadata; "Nothing found in the image." when there is none."""
    if image is None:
        return "", "", ""
    geninfo, items = images.read_info_from_image(image)
    entries = {"parameters": geninfo, **items} if geninfo is not None else items
    info = "".join(f"<div><p><b>{_html(str(key))}</b></p><p>{_html(str(text))}</p></div>\n"
                   for key, text in entries.items())
    return "", geninfo, info or "<div><p>Nothing found in the image.<p></div>"


def __getattr__(name: str):
    why = ("the Checkpoint Merger is the web UI's own tab and job (modules/models/merger.py); A1111's "
           "run_modelmerger returns Gradio updates") if name == "run_modelmerger" else ""
    raise missing_name("modules.extras", name, why)
