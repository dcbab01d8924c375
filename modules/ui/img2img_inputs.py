"""What the img2img tab's inputs become: the init image and mask of the selected mode, "Resize by" sizes,
and component values → the dict GenerationRequest validates."""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from modules import masking
from modules.ui import request_form
from modules.ui.common import number

# Keys of Img2ImgTab.fields that are not request fields: the inputs, resize-by and batch controls.
IMAGE_KEYS = ("init_img", "sketch", "init_img_with_mask", "inpaint_color_sketch", "init_img_inpaint",
              "init_mask_inpaint")
UI_KEYS = IMAGE_KEYS + ("mode", "resize_tab", "scale_by", "mask_alpha", "batch_input_dir", "batch_output_dir",
                        "batch_inpaint_mask_dir", "batch_use_png_info", "batch_png_info_dir", "batch_png_info_props")

LABELS = {**request_form.LABELS, "init_images": "Image", "mask": "Mask", "resize_mode": "Resize mode",
          "mask_blur": "Mask blur", "inpainting_fill": "Masked content", "inpaint_full_res": "Inpaint area",
          "inpaint_full_res_padding": "Only masked padding, pixels", "inpainting_mask_invert": "Mask mode",
          "selected_script": "Script", "extension_scripts": "Script"}


class InputError(ValueError):
    """Missing or unusable input images; the message is for the user."""


def painted_mask(editor: dict | None) -> Image.Image | None:
    """The union of the ImageEditor's painted layers as an "L" mask (255 where painted), None if nothing was."""
    layers = [layer for layer in (editor or {}).get("layers") or [] if layer is not None]
    if not layers:
        return None
    size = editor["background"].size if editor.get("background") is not None else layers[0].size
    alpha = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers:
        channel = layer.convert("RGBA").getchannel("A")
        if channel.size != size:
            channel = channel.resize(size, Image.Resampling.NEAREST)
        alpha |= np.asarray(channel) > 0
    if not alpha.any():
        return None
    return Image.fromarray(alpha.astype(np.uint8) * 255, "L")


def sketch_mask(background: Image.Image, composite: Image.Image, transparency: float = 0) -> Image.Image | None:
    """Inpaint sketch: repaint where the sketch changed the picture; "Mask transparency" (0–100) dims the mask."""
    changed = masking.sketch_mask(masking.flatten(background), masking.flatten(composite).resize(background.size))
    if changed.getbbox() is None:
        return None
    return ImageEnhance.Brightness(changed).enhance(1 - float(transparency or 0) / 100)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """"Resize by": the input size times `scale`, rounded to multiples of 8 (at least 64)."""
    width, height = size
    return (max(64, int(round(width * scale / 8)) * 8), max(64, int(round(height * scale / 8)) * 8))


def init_and_mask(mode: str, values: dict[str, Any], background: str = "#ffffff",
                  ) -> tuple[Image.Image, Image.Image | None]:
    """The init image and mask of the chosen sub-tab; InputError says what is missing."""
    if mode == "img2img":
        image = values.get("init_img")
        if image is None:
            raise InputError("img2img: upload an image first.")
        return masking.flatten(image, background), None
    if mode in ("sketch", "inpaint", "inpaint_sketch"):
        editor = values.get({"sketch": "sketch", "inpaint": "init_img_with_mask",
                             "inpaint_sketch": "inpaint_color_sketch"}[mode]) or {}
        if editor.get("background") is None:
            raise InputError(f"{mode.replace('_', ' ').capitalize()}: upload an image first.")
        if mode == "sketch":
            return masking.flatten(editor.get("composite") or editor["background"], background), None
        if mode == "inpaint":
            mask = painted_mask(editor)
            if mask is None:
                raise InputError("Inpaint: paint over the part of the image to repaint first.")
            return masking.flatten(editor["background"], background), mask
        composite = editor.get("composite") or editor["background"]
        mask = sketch_mask(editor["background"], composite, values.get("mask_alpha") or 0)
        if mask is None:
            raise InputError("Inpaint sketch: draw over the part of the image to repaint first.")
        return masking.flatten(composite, background), mask
    if mode == "inpaint_upload":
        image, mask = values.get("init_img_inpaint"), values.get("init_mask_inpaint")
        if image is None:
            raise InputError("Inpaint upload: upload an image first.")
        if mask is None:
            raise InputError("Inpaint upload: upload a mask too (white = repaint).")
        return masking.flatten(image, background), mask   # alpha or grey, resized by the backend
    raise InputError(f"unknown img2img mode {mode!r}")


_EDITORS = {"sketch": "sketch", "inpaint": "init_img_with_mask", "inpaint_sketch": "inpaint_color_sketch"}


def image_of(mode: str, values: dict[str, Any], background: str = "#ffffff") -> Image.Image:
    """The picture of the chosen sub-tab, mask or not (what Interrogate reads); InputError when there is none."""
    if mode in _EDITORS:
        editor = values.get(_EDITORS[mode]) or {}
        image = editor.get("composite") if mode != "inpaint" else None
        image = image or editor.get("background")
    else:
        image = values.get("init_img_inpaint" if mode == "inpaint_upload" else "init_img")
    if image is None:
        raise InputError(f"{mode.replace('_', ' ').capitalize()}: upload an image first.")
    return masking.flatten(image, background)


def request_data(values: dict[str, Any], background: str = "#ffffff") -> dict[str, Any]:
    """Component values → the dict GenerationRequest validates: init image and mask of the selected mode,
    "Resize by" turned into a size, the selected script's arguments. Raises InputError without an image."""
    values = dict(values)
    mode = values.get("mode") or "img2img"
    data = {key: value for key, value in values.items() if key not in UI_KEYS}
    data = request_form.request_data(data)
    if mode != "batch":
        init, mask = init_and_mask(mode, values, background)
        data["init_images"], data["mask"] = [init], mask
        if values.get("resize_tab") == "by":
            data["width"], data["height"] = scaled_size(init.size, float(values.get("scale_by") or 1))
    for key in ("resize_mode", "inpainting_fill", "inpainting_mask_invert", "mask_blur", "inpaint_full_res_padding"):
        if key in data:
            data[key] = number(data[key], int)
    if "inpaint_full_res" in data:   # the radio's index: 1 = "Only masked"
        data["inpaint_full_res"] = data["inpaint_full_res"] == 1
    return data
