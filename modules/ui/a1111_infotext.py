"""A1111's `modules.infotext_utils` (old name `generation_parameters_copypaste`) for extensions: the infotext parser
in A1111's output shape, and the "Send to" buttons an extension registers (`register_paste_params_button`), wired
to the project's own send-to code once the page is built (`a1111_paste_buttons.py`).

`paste_fields[tab]` lists a tab's controls as A1111 does, `(component, infotext key)`, Prompt first; they are filled
in when the page is built (extensions' `on_ui_tabs` run after the generation tabs exist, as in A1111).
"""
from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
from PIL import Image

from modules import shared
from modules.output import infotext
from modules.output.infotext import quote, unquote   # noqa: F401 - A1111's names
from modules.prompts import attention
from modules.untrusted import user_images

log = logging.getLogger(__name__)


class ParamBinding:
    """A1111's: `paste_button` sends `source_image_component`/`source_text_component` (infotext) to `tabname`'s
    controls, or copies `source_tabname`'s prompt, steps (and seed, `paste_field_names`)."""

    def __init__(self, paste_button, tabname, source_text_component=None, source_image_component=None,
                 source_tabname=None, override_settings_component=None, paste_field_names=None):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


class PasteField(tuple):
    """A1111's `(component, infotext key or function of the parsed dict)` pair."""

    def __new__(cls, component, target, *, api=None):
        return super().__new__(cls, (component, target))

    def __init__(self, component, target, *, api=None):
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


paste_fields: dict[str, dict] = {}
registered_param_bindings: list[ParamBinding] = []


def reset() -> None:
    paste_fields.clear()
    registered_param_bindings.clear()


# ---------------------------------------------------------------- parsing

def parse_generation_parameters(x: str, skip_fields: list[str] | None = None) -> dict:
    """A1111's dict for an infotext: "Prompt", "Negative prompt", every "Key: value" (string values, "Size-1"/
    "Size-2" for sizes), A1111's defaults for missing keys, styles taken out of the prompts per `infotext_styles`
    ("Styles array"), and the keys in `skip_fields` (default: the `infotext_skip_pasting` setting) removed."""
    res = infotext.parse_infotext(x or "")
    _rejoin_legacy_sampler(res, x or "")
    running = _running()
    settings = running.options if running is not None else None
    if skip_fields is None:
        skip_fields = list(settings.get("infotext_skip_pasting", []) or []) if settings is not None else []
    if settings is not None and settings.get("infotext_styles", "Apply if any") != "Ignore":
        _extract_styles(res, running.networks.styles, settings.get("infotext_styles"))
    _restore_old_hires_fix_params(res, settings)
    weighted = [part for text in (res["Prompt"], res["Negative prompt"])
                for part in attention.parse_prompt_attention(str(text))]
    if "Emphasis" not in res and any(weight != 1.0 and piece != "BREAK" for piece, weight in weighted):
        res["Emphasis"] = "Original"
    res.setdefault("Refiner switch by sampling steps", False)
    for key in skip_fields:
        res.pop(key, None)
    return res


def _rejoin_legacy_sampler(res: dict, text: str) -> None:
    """The project's parser splits an old "Sampler: DPM++ 2M Karras" into sampler and schedule; A1111's dict keeps
    it whole (its samplers split it when pasted), with "Schedule type" left at its default."""
    last = text.strip().replace("\r\n", "\n").split("\n")[-1][:infotext.MAX_PARAMS_LINE]
    written = {key for key, _ in infotext.find_params(last)}
    if "Sampler" in written and "Schedule type" not in written and res.get("Schedule type") != "Automatic":
        res["Sampler"], res["Schedule type"] = f"{res['Sampler']} {res['Schedule type']}", "Automatic"


def _running():
    """The running server's services; None before the web UI has started (a test, a tool)."""
    try:
        return shared.services()
    except RuntimeError:
        return None


def _extract_styles(res: dict, styles, mode: str) -> None:
    """A1111: styles whose text is found in both prompts come out of them ("Styles array")."""
    prompt, negative, found = styles.extract(str(res["Prompt"]), str(res["Negative prompt"]))
    res["Prompt"], res["Negative prompt"] = prompt, negative
    if (mode == "Apply if any" and found) or mode == "Apply":
        res["Styles array"] = found


def _restore_old_hires_fix_params(res: dict, settings) -> None:
    """A1111: an old infotext's "First pass size" becomes the size, and its size the hires resize."""
    if settings is not None and settings.get("use_old_hires_fix_width_height", False):
        width, height = int(res.get("Hires resize-1", 0)), int(res.get("Hires resize-2", 0))
        if width and height:
            res["Size-1"], res["Size-2"] = width, height
            return
    first_width, first_height = res.get("First pass size-1"), res.get("First pass size-2")
    if first_width is None or first_height is None:
        return
    width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))
    first_width, first_height = int(first_width), int(first_height)
    if first_width == 0 or first_height == 0:   # A1111's old_hires_fix_first_pass_dimensions
        scale = (512 * 512 / (width * height)) ** 0.5
        first_width, first_height = 64 * round(scale * width / 64), 64 * round(scale * height / 64)
    res["Size-1"], res["Size-2"] = first_width, first_height
    res["Hires resize-1"], res["Hires resize-2"] = width, height


def create_override_settings_dict(text_pairs) -> dict:
    """A1111's: ["Clip skip: 2", "ENSD: 31337"] → {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337},
    for the settings an infotext key names."""
    params = {}
    for pair in text_pairs or []:
        key, _, value = str(pair).partition(":")
        params[key.strip()] = value.strip()
    return {name: value for _, name, value in _settings_named(params)}


def get_override_settings(params: dict, *, skip_fields=None) -> list[tuple[str, str, object]]:
    """A1111's: (infotext key, setting, value) for each setting the parsed infotext names with another value
    than the current one."""
    return [(key, name, value) for key, name, value in _settings_named(params)
            if key not in (skip_fields or {}) and value != shared.services().options.get(name)]


def _settings_named(params: dict):
    options = shared.services().options
    mapping = {**{info.infotext: key for key, info in options.infos().items() if info.infotext},
               **infotext.SETTINGS_FROM_INFOTEXT}
    for key, name in mapping.items():
        if params.get(key) is None or name not in options.infos():
            continue
        try:
            yield key, name, infotext.setting_value(params[key], options.get(name))
        except ValueError:
            log.warning("infotext %s: %r is not a value of the setting %s", key, params[key], name)


# ---------------------------------------------------------------- images from the page

def image_from_url_text(filedata) -> Image.Image | None:
    """A1111's: an image from what a gallery or image component hands a function (a file in Gradio's upload
    folder, a `(path, caption)` pair, Gradio 3's `{"name": ..., "is_file": True}`, or base64 data)."""
    if filedata is None:
        return None
    if isinstance(filedata, (list, tuple)):   # a gallery (its first item), or one item: (image or path, caption)
        return image_from_url_text(filedata[0]) if filedata else None
    if isinstance(filedata, Image.Image):
        return filedata
    if isinstance(filedata, dict):
        path = filedata.get("path") or filedata.get("name") or (filedata.get("image") or {}).get("path")
        return _served_file(path) if path else None
    text = str(filedata)
    if text.startswith("data:") or not Path(text).suffix:
        return user_images.decode_base64_image(text)
    return _served_file(text)


def _served_file(path: str) -> Image.Image:
    """A file the page may name: only one in Gradio's upload/cache folder or the outputs (A1111 checks its temp
    folders the same way)."""
    resolved = Path(path.rsplit("?", 1)[0]).resolve()
    allowed = [Path(gr.utils.get_upload_folder()).resolve()]
    running = _running()
    if running is not None:
        allowed.append(running.paths.outputs.resolve())
    if not any(resolved == folder or folder in resolved.parents for folder in allowed):
        raise ValueError(f"{path} is not a file of this page (outside the upload and output folders)")
    return user_images.load_image_file(resolved)


# ---------------------------------------------------------------- buttons

def add_paste_fields(tabname: str, init_img, fields, override_settings_component=None) -> None:
    """A1111's: record a tab's paste fields (txt2img's and img2img's are also `modules.ui.<tab>_paste_fields`)."""
    fields = [field if isinstance(field, PasteField) else PasteField(*field) for field in fields or []]
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}


def create_buttons(tabs_list) -> dict[str, gr.Button]:
    return {tab: gr.Button(f"Send to {tab}", elem_id=f"{tab}_tab") for tab in tabs_list}


def bind_buttons(buttons: dict, send_image, send_generate_info) -> None:
    """A1111's older way to register "Send to" buttons."""
    for tabname, button in buttons.items():
        text = send_generate_info if isinstance(send_generate_info, gr.components.Component) else None
        source_tab = send_generate_info if isinstance(send_generate_info, str) else None
        register_paste_params_button(ParamBinding(paste_button=button, tabname=tabname, source_text_component=text,
                                                  source_image_component=send_image, source_tabname=source_tab))


def register_paste_params_button(binding: ParamBinding) -> None:
    registered_param_bindings.append(binding)
