"""The Extras tab and /sdapi/v1/extra-single-image, extra-batch-images: face restoration and upscaling.

Follows A1111's postprocessing: the image is converted to RGB, faces are restored (GFPGAN, then CodeFormer),
then upscaled (upscaler 1, optionally blended with upscaler 2) — or upscaled first when `upscale_first`.
The written infotext is A1111's postprocessing text ("Postprocess upscale by: 2, Postprocess upscaler: ...");
the image's own "parameters" text is kept as it was, and the postprocessing text goes into the PNG chunks
"postprocessing" and "extras" as A1111 writes them.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from modules import images
from modules.output import infotext

MAX_SIDE = 8192
MAX_PIXELS = 64_000_000


class ExtrasRequest(BaseModel):
    """A1111's ExtrasBaseRequest fields and API defaults."""

    model_config = ConfigDict(extra="forbid", strict=True)

    resize_mode: int = Field(0, ge=0, le=1)          # 0: scale by upscaling_resize, 1: scale to W×H
    show_extras_results: bool = True                 # A1111 uses it only for its batch-from-folder mode
    gfpgan_visibility: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    codeformer_visibility: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    codeformer_weight: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    upscaling_resize: float = Field(2.0, ge=1.0, le=8.0, allow_inf_nan=False)
    upscaling_resize_w: int = Field(512, ge=64, le=MAX_SIDE)
    upscaling_resize_h: int = Field(512, ge=64, le=MAX_SIDE)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    upscale_first: bool = False
    save_images: bool = True

    @field_validator("upscaler_1", "upscaler_2")
    @classmethod
    def _known_upscaler(cls, value: str, info: ValidationInfo) -> str:
        upscalers = (info.context or {}).get("upscalers")
        if upscalers is None:
            return value
        name = upscalers.find(value)
        if name is None or upscalers.is_latent(name):
            raise ValueError(f"unknown upscaler {value!r}; use one of {upscalers.names()}")
        return name


def validate_extras(data: dict, upscalers) -> ExtrasRequest:
    """The one validator for the Extras UI and API (raises pydantic.ValidationError naming the field)."""
    return ExtrasRequest.model_validate(data, context={"upscalers": upscalers})


@dataclass
class ExtrasResult:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    html_info: str = ""
    saved: list[str] = field(default_factory=list)


def _upscale_factor(request: ExtrasRequest, size: tuple[int, int]) -> float:
    if request.resize_mode == 1:   # A1111: scale to cover W×H, then crop to it when asked
        return max(request.upscaling_resize_w / size[0], request.upscaling_resize_h / size[1])
    return request.upscaling_resize


def output_size(request: ExtrasRequest, size: tuple[int, int]) -> tuple[int, int]:
    """The size an input of `size` comes out at."""
    if request.upscaler_1 == "None":
        return size
    if request.resize_mode == 1 and request.upscaling_crop:
        return request.upscaling_resize_w, request.upscaling_resize_h
    factor = _upscale_factor(request, size)
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def check_sizes(request: ExtrasRequest, sizes: list[tuple[int, int]]) -> None:
    """ValueError for any output over 8192 px a side or 64 megapixels, before any work starts."""
    for index, size in enumerate(sizes):
        width, height = output_size(request, size)
        if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
            which = f"image {index + 1}" if len(sizes) > 1 else "the image"
            raise ValueError(f"upscaling_resize: {which} ({size[0]}x{size[1]}) would become {width}x{height}, "
                             f"over the limit of {MAX_SIDE} pixels a side and {MAX_PIXELS // 1_000_000} "
                             "megapixels")


def _number(value: float) -> int | float:
    """A number as A1111's infotext shows it: 2 rather than 2.0, at most three decimals."""
    value = round(value, 3)
    return int(value) if value == int(value) else value


def _upscale(image: Image.Image, request: ExtrasRequest, upscalers, info: dict, job) -> Image.Image:
    if request.upscaler_1 == "None":
        return image
    factor = _upscale_factor(request, image.size)
    if request.resize_mode == 1:
        info["Postprocess upscale to"] = f"{request.upscaling_resize_w}x{request.upscaling_resize_h}"
    else:
        info["Postprocess upscale by"] = _number(request.upscaling_resize)
    result = upscalers.upscale(image, factor, request.upscaler_1, job=job)
    info["Postprocess upscaler"] = request.upscaler_1
    if request.upscaler_2 != "None" and request.extras_upscaler_2_visibility > 0:
        second = upscalers.upscale(image, factor, request.upscaler_2, job=job).convert(result.mode)
        result = Image.blend(result, second, request.extras_upscaler_2_visibility)
        info["Postprocess upscaler 2"] = request.upscaler_2
        info["Postprocess upscaler 2 visibility"] = _number(request.extras_upscaler_2_visibility)
    if request.resize_mode == 1 and request.upscaling_crop:
        width, height = request.upscaling_resize_w, request.upscaling_resize_h
        left, top = (result.width - width) // 2, (result.height - height) // 2
        result = result.crop((left, top, left + width, top + height))
        info["Postprocess crop to"] = f"{width}x{height}"
    return result


def _restore_faces(image: Image.Image, request: ExtrasRequest, restorers, info: dict, job) -> Image.Image:
    if request.gfpgan_visibility > 0:
        image = restorers.restore(image, "GFPGAN", request.gfpgan_visibility, job=job)
        info["GFPGAN visibility"] = _number(request.gfpgan_visibility)
    if request.codeformer_visibility > 0:
        image = restorers.restore(image, "CodeFormer", request.codeformer_visibility,
                                  codeformer_weight=request.codeformer_weight, job=job)
        info["CodeFormer visibility"] = _number(request.codeformer_visibility)
        info["CodeFormer weight"] = _number(request.codeformer_weight)
    return image


def _postprocessing_text(info: dict) -> str:
    return ", ".join(f"{key}: {infotext.quote(str(value))}" for key, value in info.items())


def _save(image: Image.Image, name: str, text: str, parameters: str | None, options, paths,
          output_dir: Path | None = None) -> Path:
    """A1111 saves Extras results as outputs/extras-images/NNNNN.png (no date folder, no seed), or
    <original name>-NNNN.png when the input had a file name."""
    extension = options.samples_format
    if not options.enable_pnginfo:
        image.info = {}
    # PNG keeps "parameters" and gains "postprocessing"/"extras" from image.info; JPEG and WebP have one
    # comment, which gets the postprocessing text as in A1111.
    comment = parameters if extension == "png" else text
    folder = output_dir or (paths.data / options.outdir_extras_samples).resolve()
    basename = Path(name).stem if name else ""
    return images.save_numbered(image, folder, basename=basename, extension=extension,
                                infotext=comment if options.enable_pnginfo else None)


def run_extras(request: ExtrasRequest, inputs: list[tuple[Image.Image, str]], *, upscalers, restorers, options,
               paths, job=None, output_dir: Path | None = None) -> ExtrasResult:
    """Run the Extras operations on each (image, original file name or "") and save the results (in
    `output_dir` when given: Batch from Directory's output folder).

    Raises ValueError for outputs over the size limit before any image is processed. An interrupted job
    stops after the current image; the images done so far are returned.
    """
    check_sizes(request, [image.size for image, _ in inputs])
    result = ExtrasResult()
    if job is not None:
        job.image_count = len(inputs)
    for index, (source, name) in enumerate(inputs):
        if job is not None:
            if job.interrupted:
                break
            job.image_index = index
            job.textinfo = name or f"Image {index + 1} of {len(inputs)}"
        parameters, existing = images.read_info(source)
        image = source.convert("RGB")
        info: dict = {}
        if request.upscale_first:
            image = _upscale(image, request, upscalers, info, job)
            image = _restore_faces(image, request, restorers, info, job)
        else:
            image = _restore_faces(image, request, restorers, info, job)
            image = _upscale(image, request, upscalers, info, job)
        text = _postprocessing_text(info)
        image.info = {**existing, **({"parameters": parameters} if parameters else {}),
                      "postprocessing": text, "extras": text}
        if request.save_images:
            result.saved.append(str(_save(image, name, text, parameters, options, paths, output_dir)))
        result.images.append(image)
        result.infotexts.append(text)
    if result.infotexts:
        lines = result.infotexts[-1].split("\n")
        result.html_info = "<p>" + "<br>\n".join(html.escape(line) for line in lines) + "</p>"
    return result
