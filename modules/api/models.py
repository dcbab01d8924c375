"""Request and response bodies of the /sdapi/v1 routes, with A1111's field names and defaults.

Types are strict (a string is not a number) so a wrong type is a 422 naming the field, with the coercions A1111's
pydantic-v1 models made for values its clients really send (`A1111Body`); ranges and cross-field rules live in
`generation.request.GenerationRequest`, the one validator the UI shares.
"""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


def _accepted_types(annotation) -> tuple:
    """The plain types a field takes: `int | None` → (int, NoneType)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


class A1111Body(BaseModel):
    """A request body as A1111's pydantic-v1 models read it, for the values its clients really send: those models
    coerced `false`/`true` into an int field and clients send them for the int flags (`"inpainting_mask_invert":
    false`), so the fields in BOOL_FLAGS take them; 0/1 is a bool for a bool field (`"restore_faces": 0`); a
    whole-number float (`4.0`) is an int. Everything else stays strict, naming the field: NaN, infinities,
    fractions and strings for an int, a bool for a count (`"steps": true`); ranges are checked by the request's
    validator. Unknown fields are ignored, as A1111 does: clients of different versions send different sets."""
    model_config = ConfigDict(strict=True, extra="ignore")
    # A1111's int fields that are switches or choices, where a client's true/false means 1/0.
    BOOL_FLAGS: typing.ClassVar[frozenset[str]] = frozenset({
        "inpainting_mask_invert", "inpainting_fill", "resize_mode", "mask_blur", "mask_blur_x", "mask_blur_y"})

    @field_validator("*", mode="before")
    @classmethod
    def _as_a1111_coerced(cls, value: Any, info: ValidationInfo) -> Any:
        accepted = _accepted_types(cls.model_fields[info.field_name].annotation)
        if int in accepted and bool not in accepted:
            if isinstance(value, bool):
                return int(value) if info.field_name in cls.BOOL_FLAGS else value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif bool in accepted and int not in accepted and type(value) is int and value in (0, 1):
            return bool(value)
        return value


class Txt2ImgRequest(A1111Body):

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: str | None = Field(None, max_length=128)
    # API-only fields
    sampler_index: str = "Euler"
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None


class Img2ImgRequest(Txt2ImgRequest):
    """A1111's StableDiffusionImg2ImgProcessingAPI: txt2img's fields (hires fix excepted) plus the image ones,
    with the API's defaults (which differ from the UI's: fill, only masked, no padding)."""

    init_images: list[str] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool | int = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False
    denoising_strength: float | None = 0.75


class ExtrasOptions(A1111Body):
    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasOptions):
    image: str = Field("", description="base64 image or data URI")


class FileData(BaseModel):
    model_config = ConfigDict(strict=True)
    data: str = Field(..., description="base64 image or data URI")
    name: str = Field("", max_length=1024)


class ExtrasBatchImagesRequest(ExtrasOptions):
    imageList: list[FileData] = Field(..., max_length=64)


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str | None = None


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


class ImageResponse(BaseModel):
    images: list[str] | None = Field(None, description="base64 PNG images with the infotext chunk")
    parameters: dict[str, Any]
    info: str


class PngInfoRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    image: str = Field(..., max_length=64 * 1024 * 1024, description="base64 image or data URI")


class PngInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ProgressState(BaseModel):
    skipped: bool
    interrupted: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None
    # Ours, beyond A1111: which job this is about and where it stands.
    id: str | None = None
    status: str | None = None
    queue_position: int | None = None
    error: str | None = None


class JobResultResponse(BaseModel):
    """Ours: GET /sdapi/v1/jobs/{id}."""
    id: str
    status: str
    error: str | None = None
    images: list[str] = []
    info: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float
    need_inner_model: bool


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None = None


class ScriptsList(BaseModel):
    txt2img: list[str]
    img2img: list[str]


class ScriptArg(BaseModel):
    label: str | None = None
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: list[str] | None = None


class ScriptInfo(BaseModel):
    name: str
    is_alwayson: bool
    is_img2img: bool
    args: list[ScriptArg]


class ExtensionItem(BaseModel):
    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: str
    enabled: bool


class RealesrganItem(BaseModel):
    name: str
    path: str | None = None
    scale: int | None = None


# A1111's names for these bodies (`from modules.api.models import StableDiffusionTxt2ImgProcessingAPI`, ...), for
# extensions that build requests (agent-scheduler, adetailer): the same models the routes validate with.
StableDiffusionTxt2ImgProcessingAPI = Txt2ImgRequest
StableDiffusionImg2ImgProcessingAPI = Img2ImgRequest
TextToImageResponse = ImageToImageResponse = ImageResponse
ExtrasBaseRequest = ExtrasOptions
PNGInfoRequest = PngInfoRequest
PNGInfoResponse = PngInfoResponse
