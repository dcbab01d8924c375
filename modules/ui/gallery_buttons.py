"""The tool buttons under a gallery (A1111's `create_output_panel`): 📂 opens the tab's output folder, 💾 saves
the picked image (or all) to the Save folder with a line in its log.csv, 🗃️ saves them and a zip of them.
The files go through `modules.output.gallery_files`; the page offers what was written for download.

📂 shows only on a server for this machine (not with --listen or --server-name, nor with --hide-ui-dir-config,
as A1111 hides it): the folder opens on the server's desktop, so only a browser on that machine may ask.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from modules.cmd_args import is_non_local
from modules.output import gallery_files
from modules.ui.common import PRIVATE, escape_multiline, tool_button

log = logging.getLogger(__name__)

FOLDER_SYMBOL = "\U0001f4c2"   # 📂
SAVE_SYMBOL = "💾"
ZIP_SYMBOL = "🗃️"
# The folder 📂 opens for each tab when nothing has been saved yet (A1111: the tab's `outdir`).
OUTDIR_OPTION = {"txt2img": "outdir_txt2img_samples", "img2img": "outdir_img2img_samples",
                 "extras": "outdir_extras_samples", "controlnet": "outdir_txt2img_samples"}


@dataclass
class GalleryButtons:
    open_folder: gr.Button | None   # None where hidden (a server for the network, --hide-ui-dir-config)
    save: gr.Button | None          # None for the Extras tab, as in A1111
    save_zip: gr.Button | None
    servable: Path | None = None    # the Save folder as served for downloads when the page was built


def folder_button_shown(args) -> bool:
    return not getattr(args, "hide_ui_dir_config", False) and not is_non_local(args)


def save_folder(services) -> Path:
    """The Save button's folder (`outdir_save`, relative to the data folder)."""
    return (services.paths.data / (services.options.get("outdir_save") or "log/images")).resolve()


def servable_save_folder(services) -> Path | None:
    """The Save folder, to serve its files for download; None when it would serve the data folder itself (or a
    folder above it: the models, the settings) — then the files are saved but not offered."""
    folder, data = save_folder(services), services.paths.data.resolve()
    return None if data == folder or folder in data.parents else folder


def create(services, tab: str) -> GalleryButtons:
    """The buttons, in the row they are called in."""
    opener = None
    if folder_button_shown(services.args):
        opener = tool_button(FOLDER_SYMBOL, f"{tab}_open_folder")
    save = save_zip = None
    if tab != "extras":
        save = tool_button(SAVE_SYMBOL, f"save_{tab}")
        save_zip = tool_button(ZIP_SYMBOL, f"save_zip_{tab}")
    return GalleryButtons(opener, save, save_zip, servable_save_folder(services))


def _from_this_machine(request: gr.Request | None) -> bool:
    host = getattr(getattr(request, "client", None), "host", None)
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def folder_to_open(services, tab: str, generation: dict | None) -> Path:
    """The folder of the last saved image (its dated subfolder; A1111's default "Subdirectory"), else the tab's
    output folder."""
    root = (services.paths.data / (services.options.get(OUTDIR_OPTION.get(tab, "outdir_txt2img_samples")) or
                                   "outputs")).resolve()
    saved = [Path(path) for path in (generation or {}).get("saved") or []]
    if saved and saved[0].parent.is_dir():
        return saved[0].parent
    return root


def connect(services, tab: str, buttons: GalleryButtons, gallery: gr.Gallery, generation: gr.State,
            selected: gr.State, downloads: gr.File, html_log: gr.HTML) -> None:
    quiet = {"show_progress": "hidden", "api_visibility": PRIVATE}
    if buttons.open_folder is not None:
        def open_folder(generation_value, request: gr.Request):
            if not _from_this_machine(request):
                return escape_multiline("The output folder opens only for a browser on the server's machine.")
            return escape_multiline(gallery_files.open_folder(folder_to_open(services, tab, generation_value)))

        buttons.open_folder.click(open_folder, inputs=[generation], outputs=[html_log], queue=False, **quiet)

    def save(pictures, generation_value, picked, make_zip: bool):
        paths = [item[0] if isinstance(item, (tuple, list)) else item for item in (pictures or [])]
        picked = 0 if picked is None else picked   # the gallery opens on its first image (A1111's index 0)
        try:
            saved = gallery_files.save_images(paths, generation_value or {}, services.options, save_folder(services),
                                              selected=picked, make_zip=make_zip)
        except gallery_files.SaveError as error:
            raise gr.Error(escape_multiline(str(error)), title="Not saved", print_exception=False) from None
        except (OSError, ValueError) as error:   # a gallery file that cannot be read back
            raise gr.Error(escape_multiline(f"Could not save: {error}"), title="Not saved",
                           print_exception=False) from None
        log.info("saved %s to %s", ", ".join(saved.names), saved.folder)
        shown = f"Saved: {saved.archive.name if saved.archive else saved.names[0]}"
        if buttons.servable is None or saved.folder != buttons.servable:   # outdir_save changed since start
            return gr.update(value=None, visible=False), f"<p>{escape_multiline(f'{shown} in {saved.folder}')}</p>"
        return gr.update(value=[str(path) for path in saved.downloads], visible=True), \
            f"<p>{escape_multiline(shown)}</p>"

    for button, make_zip in ((buttons.save, False), (buttons.save_zip, True)):
        if button is not None:
            button.click(lambda pictures, value, picked, make_zip=make_zip: save(pictures, value, picked, make_zip),
                         inputs=[gallery, generation, selected], outputs=[downloads, html_log], **quiet)
