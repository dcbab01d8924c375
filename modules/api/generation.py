"""A1111 txt2img/img2img request bodies → our GenerationRequest: defaults, infotext, scripts, overrides.

The conversion happens at the edge so the backend sees one validated request type, whoever sent it.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException
from pydantic import ValidationError

from modules.output import infotext
from modules.api import controlnet as controlnet_api, models
from modules.api.errors import validation_error
from modules.api.image_inputs import decode_image_field
from modules.jobs import QueueFull
from modules.generation.request import OVERRIDE_FIELDS, GenerationRequest, validate_request
from modules.postprocess import face_restoration
from modules.services import Services

log = logging.getLogger(__name__)

# Request fields this version cannot honour yet: asking for them is a clear 422, not a silent no-op.
NOT_YET_SUPPORTED = {
    "firstpass_image": "starting hires fix from a given first-pass image is not available",
    "latent_mask": "a separate latent mask is not available; send the mask in `mask`",
}
# Values of those fields that mean "not used".
UNSET = (None, False, "", [], {}, "None", "Use same checkpoint")
# Where a GenerationRequest field came from in the A1111 request, to name it in errors.
FIELD_LOCATIONS = {"checkpoint": ["override_settings", "sd_model_checkpoint"],
                   "clip_skip": ["override_settings", "CLIP_stop_at_last_layers"],
                   "vae": ["override_settings", "sd_vae"],
                   "controlnet_units": ["alwayson_scripts", "controlnet", "args"]}


def _wanted(value: Any) -> bool:
    return value not in UNSET


def _image_fields(body: models.Img2ImgRequest, services: Services) -> dict[str, Any]:
    """img2img's own fields, images decoded (base64, data URIs, or URLs where api_enable_requests allows)."""
    if not body.init_images:
        raise validation_error(["init_images"], "img2img needs at least one init image (base64 or data URI)")
    if len(body.init_images) > 64:
        raise validation_error(["init_images"], "at most 64 init images")
    if body.initial_noise_multiplier not in (None, 1.0):
        raise validation_error(["initial_noise_multiplier"], "only 1.0 (no extra noise) is supported",
                               "not_supported")
    fields: dict[str, Any] = {
        "init_images": [decode_image_field(value, ["init_images", index], services.options)
                        for index, value in enumerate(body.init_images)],
        "mask": decode_image_field(body.mask, ["mask"], services.options) if body.mask else None,
        "resize_mode": body.resize_mode,
        "mask_blur": body.mask_blur if body.mask_blur is not None else body.mask_blur_x,
        "inpainting_fill": body.inpainting_fill, "inpaint_full_res": bool(body.inpaint_full_res),
        "inpaint_full_res_padding": body.inpaint_full_res_padding,
        "inpainting_mask_invert": body.inpainting_mask_invert,
    }
    return fields


def _hires_fields(body: models.Txt2ImgRequest) -> dict[str, Any]:
    fields = {name: getattr(body, name) for name in (
        "enable_hr", "hr_scale", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_sampler_name",
        "hr_scheduler", "hr_prompt", "hr_negative_prompt")}
    fields["hr_upscaler"] = body.hr_upscaler or "Latent"
    if _wanted(body.hr_checkpoint_name):
        raise validation_error(["hr_checkpoint_name"], "a separate hires checkpoint is not available; use the "
                               "refiner", "not_supported")
    return fields


def _script_fields(body, services: Services, image_mode: bool) -> dict[str, Any]:
    """`script_name` + positional `script_args`: a dropdown script of the tab (scripts/ or an extension's); its
    arguments are passed on as given, after its defaults, and checked by the script."""
    if not _wanted(body.script_name):
        return {}
    runner = services.scripts.runner(image_mode)
    script = runner.find_selectable(body.script_name)
    if script is None:
        choices = [s.name for s in runner.selectable_scripts]
        raise validation_error(["script_name"], f"unknown script {body.script_name!r}; available: {choices}")
    return {"selected_script": script.name, "extension_scripts": {script.name: list(body.script_args or [])}}


def _alwayson_fields(scripts: dict[str, Any], services: Services, image_mode: bool) -> dict[str, Any]:
    """`alwayson_scripts`: ControlNet's units, and each always-on script's positional args by its name."""
    controlnet = {title: value for title, value in scripts.items() if title.lower() == "controlnet"}
    try:
        fields = controlnet_api.alwayson_fields(controlnet)
    except controlnet_api.ApiError as error:
        raise validation_error(error.loc, str(error)) from None
    runner = services.scripts.runner(image_mode)
    given = {}
    for title, value in scripts.items():
        if title in controlnet:
            continue
        script = runner.find_alwayson(title)
        if script is None:
            choices = ["controlnet", *(s.name for s in runner.alwayson_scripts)]
            raise validation_error(["alwayson_scripts", title],
                                   f"unknown always-on script {title!r}; available: {choices}")
        args = value.get("args", []) if isinstance(value, dict) else None
        if not isinstance(args, list):
            raise validation_error(["alwayson_scripts", title], 'expected {"args": [value, ...]}')
        try:
            runner.args_for(script, args)
        except ValueError as error:
            raise validation_error(["alwayson_scripts", title, "args"], str(error)) from None
        given[script.name] = args
    if given:
        fields["extension_scripts"] = given
    return fields


def _override_fields(overrides: dict[str, Any], services: Services) -> dict[str, Any]:
    """override_settings → request fields (checkpoint, clip skip, VAE) and options for this request only.
    Options the API may not change (paths, security switches) are refused here as in POST /options."""
    fields: dict[str, Any] = {}
    options = {}
    for key, value in overrides.items():
        if key in OVERRIDE_FIELDS:
            fields[OVERRIDE_FIELDS[key]] = value
        else:
            options[key] = value
    try:
        fields["option_overrides"] = services.validate_options(options, from_api=True) if options else {}
    except ValueError as error:
        key, _, reason = str(error).partition(": ")
        loc = ["override_settings", key] if key in options else ["override_settings"]
        raise validation_error(loc, reason or str(error)) from None
    return fields


def to_generation_request(body: models.Txt2ImgRequest, services: Services) -> GenerationRequest:
    image_mode = isinstance(body, models.Img2ImgRequest)
    for name, reason in NOT_YET_SUPPORTED.items():
        if hasattr(body, name) and _wanted(getattr(body, name)):
            raise validation_error([name], reason, "not_supported")
    data: dict[str, Any] = {}
    pasted = infotext.parse_infotext(body.infotext) if body.infotext else None
    if pasted is not None:
        # A1111's Api.apply_infotext: fill fields the client did not set from pasted infotext.
        parsed = infotext.infotext_to_request_fields(pasted)["fields"]
        data.update({k: v for k, v in parsed.items()
                     if k in GenerationRequest.model_fields and k not in body.model_fields_set})
    explicit = body.model_fields_set
    data["styles"] = list(body.styles or [])
    for name in ("prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "seed_resize_from_h",
                 "seed_resize_from_w", "batch_size", "n_iter", "steps", "cfg_scale", "width", "height", "eta"):
        if name in explicit or name not in data:
            data[name] = getattr(body, name)
    if explicit & {"sampler_name", "sampler_index"} or "sampler_name" not in data:
        data["sampler_name"] = body.sampler_name or body.sampler_index   # A1111: sampler_index is the fallback
    if "scheduler" in explicit or "scheduler" not in data:
        data["scheduler"] = body.scheduler or "Automatic"
    if "tiling" in explicit or "tiling" not in data:
        data["tiling"] = bool(body.tiling)
    if body.restore_faces is not None:   # None: the face_restoration setting decides, as in A1111
        data["restore_faces"] = body.restore_faces
    if body.denoising_strength is not None and ("denoising_strength" in explicit or "denoising_strength" not in data):
        data["denoising_strength"] = body.denoising_strength
    if image_mode:
        data.update(_image_fields(body, services))
    else:
        data.update({k: v for k, v in _hires_fields(body).items()
                     if k in explicit or k not in data or k == "hr_upscaler" and "hr_upscaler" not in data})
    if _wanted(body.refiner_checkpoint):
        data["refiner_checkpoint"] = body.refiner_checkpoint
        if body.refiner_switch_at is not None:
            data["refiner_switch_at"] = body.refiner_switch_at
    selected = _script_fields(body, services, image_mode)
    alwayson = _alwayson_fields(body.alwayson_scripts or {}, services, image_mode)
    data.update(selected)
    data.update(alwayson)
    data["extension_scripts"] = {**alwayson.get("extension_scripts", {}), **selected.get("extension_scripts", {})}
    save = body.save_images
    data["save_images"] = save and not body.do_not_save_samples
    data["save_grid"] = save and not body.do_not_save_grid
    overrides = dict(body.override_settings or {})
    if pasted is not None:   # A1111's apply_infotext: the settings it names, unless override_settings has them
        named = infotext.SETTINGS_FROM_INFOTEXT.values()
        current = {name: getattr(services.options, name) for name in named if hasattr(services.options, name)}
        for key, value in infotext.infotext_to_settings(pasted, current).items():
            overrides.setdefault(key, value)
    data.update(_override_fields(overrides, services))
    try:
        request = validate_request(data, services.registry, services.networks, services.upscalers,
                                   services.controlnet, services.scripts)
    except ValidationError as error:
        raise request_validation_error(error) from None
    problem = face_restoration.unavailable(services.restorers, request,
                                           services.options.snapshot(request.option_overrides))
    if problem:   # before the job: a missing model file costs no sampling
        raise validation_error(["restore_faces"], problem)
    return request


def request_validation_error(error: ValidationError) -> HTTPException:
    details = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        loc = list(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        field, _, reason = message.partition(": ")
        if reason and field.isidentifier() and (not loc or loc[-1] != field):   # cross-field rule: "field: reason"
            loc, message = [*loc, field], reason
        if loc and loc[0] in FIELD_LOCATIONS:
            loc = FIELD_LOCATIONS[loc[0]] + loc[1:]
        details.append({"loc": ["body", *loc], "msg": message, "type": item["type"]})
    return HTTPException(status_code=422, detail=details)


def check_kept_overrides(body: models.Txt2ImgRequest, services: Services) -> None:
    """Before the job: overrides that are to stay as settings must be settings the API may change (not frozen by
    --freeze-settings and the like), or the client would get an error after its images were made."""
    changes = dict(body.override_settings or {})
    if not changes or body.override_settings_restore_afterwards:
        return
    try:
        services.validate_options(changes, from_api=True)
    except ValueError as error:
        key, _, reason = str(error).partition(": ")
        raise validation_error(["override_settings", key] if key in changes else ["override_settings"],
                               f"{reason or error}; send override_settings_restore_afterwards: true to use it for "
                               "this request only") from None


def keep_overrides(body: models.Txt2ImgRequest, services: Services) -> None:
    """`override_settings_restore_afterwards: false`: after the job, the overrides stay as settings (A1111).
    Checked before the job (check_kept_overrides); a save that still fails (disk full) costs no images."""
    changes = dict(body.override_settings or {})
    if not changes or body.override_settings_restore_afterwards:
        return
    checkpoint = changes.pop("sd_model_checkpoint", None)
    if changes:
        try:
            services.update_options(changes, from_api=True)
        except ValueError as error:
            log.warning("override_settings_restore_afterwards: the settings were not kept: %s", error)
    if checkpoint is not None:   # chosen as in the UI: queued behind this job, so the next request sees it
        try:
            services.submit_model_switch(checkpoint)
        except QueueFull:
            log.warning("override_settings_restore_afterwards: the queue is full; %s not kept", checkpoint)
