"""The "Send to" buttons extensions register through A1111's `infotext_utils.register_paste_params_button`, wired
to the project's send-to code (`send_to.py`): an image and its infotext go to txt2img, img2img, inpaint or extras
as PNG Info's buttons send them, and the target tab is shown. Also A1111's `paste_fields` of the generation tabs.

`bind_page` is called by `create_ui` once the generation tabs exist; `connect_paste_params_buttons` wires the buttons
(also those registered later, when an extension calls it again).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from modules.output import infotext
from modules.ui import a1111_infotext, send_to
from modules.ui.common import PRIVATE

log = logging.getLogger(__name__)

# A1111's paste fields of the generation tabs, in its order (Prompt first, Negative prompt second: extensions index
# them), as (infotext key, the tab's field).
PASTE_KEYS = (
    ("Prompt", "prompt"), ("Negative prompt", "negative_prompt"), ("Steps", "steps"), ("Sampler", "sampler_name"),
    ("Schedule type", "scheduler"), ("CFG scale", "cfg_scale"), ("Image CFG scale", "image_cfg_scale"),
    ("Seed", "seed"), ("Size-1", "width"), ("Size-2", "height"), ("Batch size", "batch_size"),
    ("Variation seed", "subseed"), ("Variation seed strength", "subseed_strength"),
    ("Seed resize from-1", "seed_resize_from_w"), ("Seed resize from-2", "seed_resize_from_h"),
    ("Styles array", "styles"), ("Denoising strength", "denoising_strength"), ("Clip skip", "clip_skip"),
    ("Tiling", "tiling"), ("Hires upscale", "hr_scale"), ("Hires upscaler", "hr_upscaler"),
    ("Hires steps", "hr_second_pass_steps"), ("Hires resize-1", "hr_resize_x"), ("Hires resize-2", "hr_resize_y"),
    ("Hires checkpoint", "hr_checkpoint_name"), ("Hires sampler", "hr_sampler_name"),
    ("Hires schedule type", "hr_scheduler"), ("Hires prompt", "hr_prompt"),
    ("Hires negative prompt", "hr_negative_prompt"), ("Mask blur", "mask_blur"), ("Mask mode", "inpainting_mask_invert"),
    ("Masked content", "inpainting_fill"), ("Inpaint area", "inpaint_full_res"),
    ("Masked area padding", "inpaint_full_res_padding"), ("Refiner", "refiner_checkpoint"),
    ("Refiner switch at", "refiner_switch_at"),
)
# What A1111 copies from tab to tab (`source_tabname`), besides a binding's `paste_field_names`.
COPIED_KEYS = ("Prompt", "Negative prompt", "Steps", "Face restoration")


@dataclass
class Page:
    services: object
    demo: gr.Blocks
    tabs: gr.Tabs
    targets: dict[str, send_to.Target]


_page: Page | None = None
_connected: set[int] = set()


def bind_page(services, demo: gr.Blocks, tabs: gr.Tabs, txt2img, img2img=None, extras=None) -> None:
    """Record the page's tabs and fill A1111's `paste_fields` (`modules.ui.txt2img_paste_fields` reads them)."""
    global _page
    _page = Page(services, demo, tabs, send_to.targets_of(txt2img, img2img, extras))
    _connected.clear()
    for name, tab in (("txt2img", txt2img), ("img2img", img2img)):
        if tab is None:
            continue
        fields = [(tab.fields[field], key) for key, field in PASTE_KEYS if field in tab.fields]
        image = getattr(tab, "images", {}).get("img2img") if name == "img2img" else None
        a1111_infotext.add_paste_fields(name, image, fields, tab.fields.get("override_settings"))
    if "inpaint" in _page.targets:
        a1111_infotext.paste_fields["inpaint"] = {**a1111_infotext.paste_fields["img2img"],
                                                  "init_img": _page.targets["inpaint"].image}
    a1111_infotext.paste_fields["extras"] = {"init_img": getattr(extras, "image", None), "fields": None,
                                             "override_settings_component": None}


def connect_paste_params_buttons() -> None:
    """A1111's name: wire each registered binding not wired yet (A1111 calls it once the page is built; an extension
    that adds buttons later calls it again, inside the page's Blocks). One whose button or source is not on the
    page (its extension's tab was left out) or whose target tab does not exist is skipped with a log line."""
    if _page is None:
        raise RuntimeError("connect_paste_params_buttons() was called before the page's tabs exist")
    for binding in list(a1111_infotext.registered_param_bindings):
        if id(binding) in _connected:
            continue
        _connected.add(id(binding))
        target = _page.targets.get(binding.tabname)
        parts = [binding.paste_button, binding.source_image_component, binding.source_text_component]
        if target is None or any(part is not None and part._id not in _page.demo.blocks for part in parts):
            log.warning("'Send to %s' button %r not wired: its tab or its components are not on the page",
                        binding.tabname, getattr(binding.paste_button, "elem_id", None))
            continue
        _connect(binding, target)


def _connect(binding, target: send_to.Target) -> None:
    page = _page
    sources = [part for part in (binding.source_image_component, binding.source_text_component) if part is not None]
    copied_in, copied_out = _copied_fields(binding, target)

    def send(*values):
        values = list(values)
        image = a1111_infotext.image_from_url_text(values.pop(0)) if binding.source_image_component is not None \
            else None
        text = values.pop(0) if binding.source_text_component is not None else None
        updates = {page.tabs: gr.Tabs(selected=target.tab)}
        if image is not None or text:
            parsed = infotext.parse_infotext(text) if text else {}
            updates.update(send_to._updates(page.services, target, binding.tabname, parsed, image, None, None, None))
        updates.update(zip(copied_out, values))
        return updates

    outputs = list(dict.fromkeys([*send_to._outputs(page.tabs, target, None), *copied_out]))
    binding.paste_button.click(send, inputs=[*sources, *copied_in], outputs=outputs, show_progress="hidden",
                               api_visibility=PRIVATE)


def _copied_fields(binding, target: send_to.Target) -> tuple[list, list]:
    """A1111's `source_tabname` copy: the source tab's prompt, steps (seed with `send_seed`, plus the binding's
    `paste_field_names`) into the same fields of the target."""
    source = _page.targets.get(binding.source_tabname) if binding.source_tabname else None
    if source is None:
        return [], []
    keys = {*COPIED_KEYS, *binding.paste_field_names}
    if _page.services.options.get("send_seed", True):
        keys.add("Seed")
    names = [field for key, field in PASTE_KEYS if key in keys]
    pairs = [(source.fields[name], target.fields[name]) for name in names
             if name in source.fields and name in target.fields and source.fields[name] is not target.fields[name]]
    return [pair[0] for pair in pairs], [pair[1] for pair in pairs]
