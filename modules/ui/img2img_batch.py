"""The img2img Batch sub-tab: its controls, the input directory's images (with masks and PNG info from
other folders) and one job per image."""
from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from modules import images, masking
from modules.diffusion import samplers
from modules.output import infotext
from modules.ui import request_form
from modules.ui.generate import Submission
from modules.ui.img2img_inputs import LABELS, InputError, scaled_size

log = logging.getLogger(__name__)

PNG_INFO_PROPS = ["Prompt", "Negative prompt", "Seed", "CFG scale", "Sampler", "Steps", "Model hash"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif")


def create_controls(services) -> dict[str, gr.components.Component]:
    """The sub-tab's folders and its PNG info accordion (read-only with --hide-ui-dir-config)."""
    hidden = bool(getattr(services.args, "hide_ui_dir_config", False))
    gr.HTML("<p>Process images in a directory on the same machine where the server is running.<br>"
            "Use an empty output directory to save pictures normally instead of writing to the output directory."
            "<br>Add inpaint batch mask directory to enable inpaint batch processing.</p>"
            + ("<p><b>Disabled by the --hide-ui-dir-config flag.</b></p>" if hidden else ""), js_on_load=None)
    fields = {
        "batch_input_dir": gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir",
                                      interactive=not hidden),
        "batch_output_dir": gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir",
                                       interactive=not hidden),
        "batch_inpaint_mask_dir": gr.Textbox(label="Inpaint batch mask directory (required for inpaint batch "
                                                   "processing only)", elem_id="img2img_batch_inpaint_mask_dir",
                                             interactive=not hidden),
    }
    with gr.Accordion("PNG info", open=False, elem_id="img2img_batch_png_info"):
        fields["batch_use_png_info"] = gr.Checkbox(False, label="Append png info to prompts",
                                                   elem_id="img2img_batch_use_png_info")
        fields["batch_png_info_dir"] = gr.Textbox(label="PNG info directory", elem_id="img2img_batch_png_info_dir",
                                                  placeholder="Leave empty to use input directory",
                                                  interactive=not hidden)
        fields["batch_png_info_props"] = gr.CheckboxGroup(PNG_INFO_PROPS, value=[], label="Parameters to take "
                                                          "from png info", elem_id="img2img_batch_png_info_props")
    return fields


def png_info_overrides(data: dict[str, Any], text: str | None, props: list[str], registry=None) -> dict[str, Any]:
    """Batch "PNG info": the chosen fields of an image's infotext over the tab's values (prompts appended)."""
    if not text or not props:
        return data
    data = dict(data)
    parsed = infotext.parse_infotext(text)
    fields = infotext.infotext_to_request_fields(parsed)["fields"]
    for prop, key in (("Prompt", "prompt"), ("Negative prompt", "negative_prompt")):
        if prop in props and fields.get(key):
            data[key] = f"{data.get(key) or ''} {fields[key]}".strip()
    for prop, key in (("Seed", "seed"), ("CFG scale", "cfg_scale"), ("Steps", "steps")):
        if prop in props and key in fields:
            data[key] = fields[key]
    if "Sampler" in props and fields.get("sampler_name"):
        try:
            data["sampler_name"], data["scheduler"] = samplers.resolve(fields["sampler_name"], fields.get("scheduler"))
        except ValueError as error:
            log.warning("PNG info sampler not used: %s", error)
    if "Model hash" in props and parsed.get("Model hash") and registry is not None:
        info = registry.find(str(parsed["Model hash"]))
        if info is not None:
            data["checkpoint"] = info.name
    return data


def batch_files(folder: str) -> list[Path]:
    directory = Path(folder).expanduser()
    if not directory.is_dir():
        raise InputError(f"Batch: input directory {folder!r} is not a folder.")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"Batch: no images in {folder!r}.")
    return files


def _mask_for(folder: str, image_path: Path) -> Path | None:
    matches = sorted(p for p in Path(folder).expanduser().glob(f"{image_path.stem}.*")
                     if p.suffix.lower() in IMAGE_SUFFIXES)
    return matches[0] if matches else None


def submissions(services, data: dict, values: dict, background: str):
    """One job per image of the input directory, queued one after the other as each finishes."""
    if getattr(services.args, "hide_ui_dir_config", False):
        raise gr.Error("Batch processing is disabled by the --hide-ui-dir-config flag.", title="img2img",
                       print_exception=False)
    try:
        files = batch_files((values.get("batch_input_dir") or "").strip())
    except InputError as error:
        raise gr.Error(html.escape(str(error)), title="img2img", print_exception=False) from None
    output_dir = (values.get("batch_output_dir") or "").strip()
    mask_dir = (values.get("batch_inpaint_mask_dir") or "").strip()
    info_dir = (values.get("batch_png_info_dir") or "").strip()
    props = list(values.get("batch_png_info_props") or []) if values.get("batch_use_png_info") else []
    if output_dir:   # saved there by us instead of into outputs/img2img-images
        data = {**data, "save_images": False, "save_grid": False}

    def save(result) -> None:
        first = result.index_of_first_image
        for image, text, seed in zip(result.images[first:], result.infotexts[first:], result.seeds):
            images.save_image(image, output_dir, seed=seed, infotext=text, save_to_dirs=False)

    def one(path: Path) -> Submission:
        def submit_file():
            try:
                image = images.load_image_file(path)
                mask_path = _mask_for(mask_dir, path) if mask_dir else None
                mask = images.load_image_file(mask_path) if mask_path else None
                text = None
                if props:
                    source = Path(info_dir).expanduser() / path.name if info_dir else path
                    text = images.read_info(images.load_image_file(source) if source != path else image)[0]
            except (OSError, ValueError) as error:
                raise gr.Error(html.escape(f"{path.name}: {error}"), print_exception=False) from None
            file_data = {**data, "init_images": [masking.flatten(image, background)], "mask": mask}
            if values.get("resize_tab") == "by":
                file_data["width"], file_data["height"] = scaled_size(image.size, float(values.get("scale_by") or 1))
            file_data = png_info_overrides(file_data, text, props, services.registry)
            return services.submit_img2img(request_form.validated(services, file_data, LABELS))
        return Submission(submit_file, save if output_dir else None)

    return [one(path) for path in files]
