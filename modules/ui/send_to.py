""""Send to txt2img / img2img / inpaint / extras": an image and its infotext → another tab's fields, and that tab
shown (A1111 infotext_utils.connect_paste and register_paste_params_button).

From PNG Info every field the target tab has is filled from the infotext (A1111's paste), and the checkpoint
in the top bar is switched to the one that made the image when it is in the checkpoint folder: A1111 skips
that by default (`disable_weights_auto_swap`) and pastes a model hash nobody sees, while here the top bar
shows the switch and the user can switch back. From an output gallery the image goes with A1111's
between-tab set (`GALLERY_FIELDS`), and the model is left alone: it made the image.
"""
from __future__ import annotations

import html
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from modules import images
from modules.output import infotext
from modules.ui import controlnet, extras as extras_module, paste, topbar as topbar_module
from modules.ui.common import PRIVATE, escape_multiline

log = logging.getLogger(__name__)

TARGETS = ("txt2img", "img2img", "inpaint", "extras")
LABELS = {"txt2img": "Send to txt2img", "img2img": "Send to img2img", "inpaint": "Send to inpaint",
          "extras": "Send to extras"}

# A1111 copies Prompt, Negative prompt, Steps and Seed between tabs (plus the image and its size); the sampler,
# schedule, CFG scale and variation seed go along too, so the receiving tab samples as the image was made.
GALLERY_FIELDS = frozenset({"prompt", "negative_prompt", "steps", "seed", "sampler_name", "scheduler", "cfg_scale",
                            "extra", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h",
                            "width", "height"})
HIRES_FIELDS = frozenset({"enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x",
                          "hr_resize_y", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt"})

# Request values that are indexes into a list of labels, for a radio that shows the labels.


# ---------------------------------------------------------------- infotext → values (no Gradio)

def field_values(services, parsed: dict, target: str, warnings: list[str], *,
                 image_size: tuple[int, int] | None = None, only: Collection[str] | None = None) -> dict[str, Any]:
    """Request field names (plus the UI's "extra", "enable_hr", "enable_refiner") → values for `target` from a
    parsed infotext, as ↙️ paste gives them (paste.pasted_values), plus the inpaint settings, and the
    checkboxes unticked when the image had no such settings (as A1111; without ControlNet units,
    `controlnet_units` is empty). `image_size` (the sent image's) sets width/height, as A1111's send_size;
    `only` limits the fields (a gallery send)."""
    if target == "extras" or (not parsed and image_size is None):
        return {}
    values: dict[str, Any] = {}
    if parsed:   # no infotext: only the image's size
        values = {"extra": False, "enable_hr": False, "enable_refiner": False, "controlnet_units": []}
        values.update(paste.pasted_values(services, paste.parsed_fields(parsed, warnings)))
    if target != "txt2img":
        values = {name: value for name, value in values.items() if name not in HIRES_FIELDS}
    if image_size is not None:
        values["width"], values["height"] = (max(64, round(side / 8) * 8) for side in image_size)
    if only is not None:
        values = {name: value for name, value in values.items() if name in only}
    return values


def checkpoint_title(parsed: dict, registry, shown: str | None, warnings: list[str]) -> str | None:
    """The title of the checkpoint named by "Model hash" (else "Model") when it differs from the shown one;
    None when it is the same, not named, or not in the checkpoint folder (then `warnings` says so)."""
    named = [str(parsed[key]) for key in ("Model hash", "Model") if parsed.get(key)]
    if not named:
        return None
    for query in named:
        info = registry.find(query)
        if info is not None:
            return info.title if info.title != shown else None
    warnings.append(f"Model: {' '.join(named)} is not in the checkpoint folder; keeping the current checkpoint")
    return None


# ---------------------------------------------------------------- the wiring

@dataclass
class Target:
    """Where a send lands: a top-level tab, its fields, and the image input (with the img2img sub-tab)."""
    tab: str
    fields: dict
    image: Any = None
    mode_tabs: gr.Tabs | None = None
    mode: str | None = None
    mode_state: gr.State | None = None   # where the tab keeps which sub-tab is shown (a switch fires no select)


def targets_of(txt2img, img2img, extras) -> dict[str, Target]:
    found = {"txt2img": Target("txt2img", dict(txt2img.fields))}
    if img2img is not None:
        for name in ("img2img", "inpaint"):
            found[name] = Target("img2img", dict(img2img.fields), img2img.images[name], img2img.mode_tabs, name)
    if extras is not None:
        found["extras"] = Target("extras", {}, extras.image, extras.mode_tabs, extras_module.SINGLE, extras.mode)
    return found


def _open_gallery_image(gallery, index: int) -> Image.Image | None:
    """The gallery's `index`th image (a file in Gradio's cache) decoded."""
    if not gallery or not 0 <= index < len(gallery):
        return None
    item = gallery[index]
    path = item[0] if isinstance(item, (tuple, list)) else item
    with Image.open(path) as opened:
        opened.load()
        return images.to_rgb_or_rgba(opened)


def _updates(services, target: Target, name: str, parsed: dict, image: Image.Image | None,
             only: Collection[str] | None, shown: str | None, checkpoint) -> dict:
    warnings: list[str] = []
    size = image.size if image is not None and target.image is not None and name != "extras" else None
    values = field_values(services, parsed, name, warnings, image_size=size, only=only)
    updates: dict = {}
    for field, value in values.items():
        component = target.fields.get(field)
        if component is None or value is None:
            continue
        value = paste.component_value(field, component, value, warnings)
        if value is not None:
            updates[component] = value
    updates.update(controlnet.paste_updates(services, values.get("controlnet_units"), target.fields, warnings,
                                            untick_others=True))
    if target.image is not None and image is not None:
        updates[target.image] = image
    if target.mode_tabs is not None:
        updates[target.mode_tabs] = gr.Tabs(selected=target.mode)
    if target.mode_state is not None:
        updates[target.mode_state] = target.mode
    if checkpoint is not None and name != "extras":
        title = checkpoint_title(parsed, services.registry, shown, warnings)
        if title is not None:
            updates[checkpoint] = title
    if warnings:
        gr.Warning(escape_multiline("Not sent:\n" + "\n".join(warnings)), title=LABELS[name], duration=10)
    return updates


def _outputs(tabs: gr.Tabs, target: Target, checkpoint) -> list:
    outputs = [tabs, *target.fields.values(), target.image, target.mode_tabs, target.mode_state, checkpoint]
    return list(dict.fromkeys(component for component in outputs if component is not None))


def connect(services, *, tabs: gr.Tabs, topbar, txt2img, img2img=None, extras=None, pnginfo=None) -> None:
    """Wire every "Send to" button: PNG Info's and those under the output galleries of txt2img, img2img and
    extras (`OutputPanel.send_buttons`). Called once every tab exists; a tab passed as None is skipped."""
    targets = targets_of(txt2img, img2img, extras)

    if pnginfo is not None:
        for name, button in pnginfo.send_buttons.items():
            target = targets.get(name)
            if target is None:
                continue

            def from_pnginfo(image, text, shown, name=name, target=target):
                if image is None:
                    gr.Warning("Drop an image into PNG Info first.", title=LABELS[name])
                    return {}
                parsed = infotext.parse_infotext(text) if text else {}
                try:
                    picture = images.check_user_image(image) if target.image is not None else None
                except (OSError, ValueError, Image.DecompressionBombError) as error:   # an Extras upscale over the cap
                    raise gr.Error(html.escape(f"Could not read the image: {error}"), title=LABELS[name]) from None
                updates = _updates(services, target, name, parsed, picture, None, (shown or {}).get("title"),
                                   topbar.checkpoint)
                return {tabs: gr.Tabs(selected=target.tab), **updates}

            event = button.click(from_pnginfo, inputs=[pnginfo.image, pnginfo.infotext, topbar.shown],
                                 outputs=_outputs(tabs, target, topbar.checkpoint), show_progress="hidden",
                                 api_visibility=PRIVATE)
            # Setting the dropdown is not a pick (its `input` event): load the model as a pick would.
            event.then(lambda title, state: topbar_module.switch_checkpoint(services, title, state),
                       inputs=[topbar.checkpoint, topbar.shown], outputs=[topbar.checkpoint, topbar.shown],
                       show_progress="full", api_visibility=PRIVATE)

    for source in (txt2img, img2img, extras):
        if source is None:
            continue
        panel = source.output
        for name, button in panel.send_buttons.items():
            target = targets.get(name)
            if target is None:
                button.visible = False   # that tab is not there: no button leading nowhere
                continue

            def from_gallery(gallery, generation, selected, name=name, target=target):
                index = selected or 0   # the grid, when there is one, is image 0
                # Extras keeps the images' own parameters apart from the postprocessing text it shows.
                texts = (generation or {}).get("parameters") or (generation or {}).get("infotexts") or []
                try:
                    picture = _open_gallery_image(gallery, index)
                except (OSError, ValueError, Image.DecompressionBombError) as error:   # an Extras upscale over the cap
                    raise gr.Error(html.escape(f"Could not read the image: {error}"), title=LABELS[name]) from None
                if picture is None:
                    gr.Warning("Nothing to send: generate an image first.", title=LABELS[name])
                    return {}
                text = texts[index] if index < len(texts) else ""
                parsed = infotext.parse_infotext(text) if text else {}
                updates = _updates(services, target, name, parsed, picture, GALLERY_FIELDS, None, None)
                return {tabs: gr.Tabs(selected=target.tab), **updates}

            button.click(from_gallery, inputs=[panel.gallery, panel.generation, panel.selected],
                         outputs=_outputs(tabs, target, None), show_progress="hidden", api_visibility=PRIVATE)
