"""The names of A1111's `modules/ui.py` that extensions import (`from modules.ui import create_refresh_button,
gr_show`, `ui.switch_values_symbol`, `modules.ui.txt2img_paste_fields`), re-exported by `modules.ui`.

`txt2img_paste_fields` / `img2img_paste_fields` (`modules.ui.__getattr__`) exist once the page's generation tabs
do (`a1111_paste_buttons.bind_page`), before extensions' `on_ui_tabs` run, as in A1111.
"""
from __future__ import annotations

import html
import platform
from importlib import metadata

from modules.ui.a1111_call_queue import wrap_gradio_call, wrap_gradio_gpu_call, wrap_queued_call  # noqa: F401
from modules.ui.a1111_common import create_output_panel, create_refresh_button, plaintext_to_html  # noqa: F401
from modules.ui.a1111_infotext import image_from_url_text
from modules.version import INFOTEXT_VERSION

random_symbol = "\U0001f3b2\ufe0f"        # 🎲️
reuse_symbol = "\u267b\ufe0f"             # ♻️
paste_symbol = "\u2199\ufe0f"             # ↙
refresh_symbol = "\U0001f504"             # 🔄
save_style_symbol = "\U0001f4be"          # 💾
apply_style_symbol = "\U0001f4cb"         # 📋
clear_prompt_symbol = "\U0001f5d1\ufe0f"  # 🗑️
extra_networks_symbol = "\U0001F3B4"      # 🎴
switch_values_symbol = "\U000021C5"       # ⇅
restore_progress_symbol = "\U0001F300"    # 🌀
detect_image_size_symbol = "\U0001F4D0"   # 📐

# Names `modules.ui` answers once the page's tabs exist (see the module docstring).
SET_WITH_THE_PAGE = {"txt2img_paste_fields", "img2img_paste_fields"}


def gr_show(visible=True) -> dict:
    """A1111's: an update that shows or hides a component."""
    return {"visible": visible, "__type__": "update"}


def send_gradio_gallery_to_image(x):
    """A1111's: the first image of a gallery's value."""
    return image_from_url_text(x[0]) if x else None


def resize_from_to_html(width, height, scale_by) -> str:
    target_width, target_height = int(width * scale_by), int(height * scale_by)
    if not target_width or not target_height:
        return "no image selected"
    return (f"resize: from <span class='resolution'>{width}x{height}</span> to "
            f"<span class='resolution'>{target_width}x{target_height}</span>")


def versions_html() -> str:
    """A1111's versions line (the page's footer shows it under `#footer .versions`; extensions read the web UI's
    version from its first link): the A1111 version whose behaviour this web UI follows, then the packages'."""
    def installed(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "N/A"

    parts = [f"version: <a>{html.escape(INFOTEXT_VERSION)}</a>", f"python: {platform.python_version()}",
             *(f"{package}: {html.escape(installed(package))}" for package in ("torch", "diffusers", "gradio"))]
    return "&#x2000;•&#x2000;".join(parts)


__all__ = ["versions_html", "wrap_gradio_call", "wrap_gradio_gpu_call", "wrap_queued_call", "create_output_panel",
         "create_refresh_button", "plaintext_to_html", "random_symbol", "reuse_symbol", "paste_symbol",
         "refresh_symbol", "save_style_symbol", "apply_style_symbol", "clear_prompt_symbol", "extra_networks_symbol",
         "switch_values_symbol", "restore_progress_symbol", "detect_image_size_symbol", "gr_show",
         "send_gradio_gallery_to_image", "resize_from_to_html"]
