"""The typed request of one generation, and its one validator (the UI, the API and scripts all use it).

Field names are A1111's processing names. Validation needs the server's registries to check names (checkpoint,
VAE, styles, upscalers, scripts): `validate_request` passes them as pydantic context.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from modules import images
from modules.controlnet.units import MAX_UNITS, ControlNetUnit
from modules.diffusion import noise, samplers
from modules.generation.hires import HiresPlan
from modules.prompts import limits

MAX_PIXELS = 2048 * 2048          # one image
MAX_BATCH_PIXELS = 2048 * 2048 * 4  # one batch, checked before anything is allocated
MAX_PROMPT_CHARS = 100_000
MAX_IMAGES = 1000                 # one request (A1111's UI goes up to 100 batches of 8)
# override_settings keys (A1111's option names) that are request fields, for the API and A1111's `p` alike
OVERRIDE_FIELDS = {"sd_model_checkpoint": "checkpoint", "CLIP_stop_at_last_layers": "clip_skip", "sd_vae": "vae"}


class GenerationRequest(BaseModel):
    """Every parameter of one txt2img generation. Field names are A1111's processing names."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    steps: int = Field(20, ge=1, le=1000)
    cfg_scale: float = Field(7.0, ge=0.0, le=100.0, allow_inf_nan=False)
    width: int = Field(512, ge=64, le=8192)
    height: int = Field(512, ge=64, le=8192)
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=1000)
    seed: int = Field(-1, ge=-1, le=noise.MAX_SEED)
    subseed: int = Field(-1, ge=-1, le=noise.MAX_SEED)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    seed_resize_from_w: int = Field(-1, ge=-1, le=8192)
    seed_resize_from_h: int = Field(-1, ge=-1, le=8192)
    eta: float | None = Field(None, ge=0.0, le=10.0, allow_inf_nan=False)   # None: the eta setting
    clip_skip: int | None = Field(None, ge=1, le=12)
    tiling: bool = False
    restore_faces: bool | None = None   # A1111's: None = the face_restoration setting (postprocess/face_restoration)
    checkpoint: str | None = None     # title, name or hash; None = the current model
    vae: str | None = None            # "Automatic", "None" or a VAE file; None = the sd_vae setting
    styles: list[str] = Field(default_factory=list, max_length=100)
    save_images: bool = True
    save_grid: bool = True

    # img2img (A1111 StableDiffusionProcessingImg2Img): init_images empty means txt2img.
    init_images: list[Any] = Field(default_factory=list, max_length=64)   # PIL images, decoded at the edge
    mask: Any = None                       # PIL image; white = repaint (inverted by inpainting_mask_invert)
    resize_mode: int = Field(0, ge=0, le=3)   # Just resize, Crop and resize, Resize and fill, latent upscale
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0, allow_inf_nan=False)
    mask_blur: int = Field(4, ge=0, le=64)
    inpainting_fill: int = Field(1, ge=0, le=3)   # fill, original, latent noise, latent nothing
    inpaint_full_res: bool = False           # inpaint area: only masked
    inpaint_full_res_padding: int = Field(32, ge=0, le=1024)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)

    # Hires fix (txt2img)
    enable_hr: bool = False
    hr_scale: float = Field(2.0, ge=1.0, le=8.0, allow_inf_nan=False)
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = Field(0, ge=0, le=1000)
    hr_resize_x: int = Field(0, ge=0, le=8192)
    hr_resize_y: int = Field(0, ge=0, le=8192)
    hr_sampler_name: str | None = None       # None: the first pass's sampler
    hr_scheduler: str | None = None
    hr_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)           # "": the first pass's prompt
    hr_negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)

    # Refiner: another checkpoint takes over at refiner_switch_at of the steps
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = Field(0.8, ge=0.01, le=1.0, allow_inf_nan=False)

    # Scripts (modules.scripts, from scripts/ and extensions): the chosen dropdown script's name, and the
    # positional args of any script given some (A1111's script_args / alwayson_scripts[name]["args"]).
    selected_script: str | None = None
    extension_scripts: dict[str, list] = Field(default_factory=dict)

    # ControlNet units (the extension's alwayson script); images are PIL, decoded at the edge
    controlnet_units: list[ControlNetUnit] = Field(default_factory=list, max_length=MAX_UNITS)

    # Settings for this request only (A1111's override_settings), validated against the options registry
    # at the edge; the worker reads them instead of the saved values while the job runs.
    option_overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"must be a multiple of 8 (got {value}; try {value // 8 * 8} or {value // 8 * 8 + 8})")
        return value

    @field_validator("checkpoint")
    @classmethod
    def _known_checkpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        registry = (info.context or {}).get("registry")
        if value and registry is not None:
            found = registry.find(value)
            if found is None:
                raise ValueError(f"unknown checkpoint {value!r}; see /sdapi/v1/sd-models")
            return found.name
        return value or None

    @field_validator("prompt", "hr_prompt")
    @classmethod
    def _prompt_within_limits(cls, value: str) -> str:
        limits.check(value)
        return value

    @field_validator("negative_prompt", "hr_negative_prompt")
    @classmethod
    def _negative_within_limits(cls, value: str) -> str:
        limits.check(value, positive=False)
        return value

    @field_validator("refiner_checkpoint")
    @classmethod
    def _known_refiner(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value or value == "None":
            return None
        return cls._known_checkpoint(value, info)

    @field_validator("init_images")
    @classmethod
    def _images(cls, value: list) -> list:
        return [images.check_user_image(image, what=f"init_images[{index}]") for index, image in enumerate(value)]

    @field_validator("mask")
    @classmethod
    def _mask_image(cls, value):
        return None if value is None else images.check_user_image(value, what="mask")

    @field_validator("hr_upscaler")
    @classmethod
    def _known_upscaler(cls, value: str, info: ValidationInfo) -> str:
        upscalers = (info.context or {}).get("upscalers")
        if upscalers is None:
            return value
        found = upscalers.find(value)
        if found is None or found == "None":
            raise ValueError(f"unknown upscaler {value!r}; choose one of {upscalers.hires_choices()}")
        return found

    @field_validator("hr_sampler_name", "hr_scheduler")
    @classmethod
    def _same_as_first_pass(cls, value: str | None) -> str | None:
        # The UI's "Use same sampler" / "Use same scheduler" and an empty value mean the first pass's.
        return None if not value or value.startswith("Use same") else value

    @field_validator("vae")
    @classmethod
    def _known_vae(cls, value: str | None, info: ValidationInfo) -> str | None:
        networks = (info.context or {}).get("networks")
        if value and networks is not None and not networks.vaes.is_choice(value):
            raise ValueError(f"unknown VAE {value!r}; choose one of {networks.vaes.choices()}")
        return value or None

    @field_validator("styles")
    @classmethod
    def _known_styles(cls, value: list[str], info: ValidationInfo) -> list[str]:
        networks = (info.context or {}).get("networks")
        unknown = networks.styles.unknown(value) if networks is not None else []
        if unknown:
            raise ValueError(f"unknown style(s) {unknown}; see /sdapi/v1/prompt-styles")
        return value

    @field_validator("sampler_name")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        samplers.resolve(value, None)   # raises ValueError listing the valid names
        return value

    @field_validator("scheduler")
    @classmethod
    def _known_schedule(cls, value: str, info: ValidationInfo) -> str:
        sampler = info.data.get("sampler_name")
        if sampler is not None:
            samplers.resolve(sampler, value)
        return value

    @model_validator(mode="after")
    def _normalise_and_budget(self) -> "GenerationRequest":
        # "DPM++ 2M Karras" → ("DPM++ 2M", "Karras"); a schedule equal to the sampler's default → Automatic.
        self.sampler_name, self.scheduler = samplers.resolve(self.sampler_name, self.scheduler)
        if "DDIM CFG++" in (self.sampler_name, self.hr_sampler_name) and self.cfg_scale <= 1:
            # it steers along the unguided prediction, which the pipeline computes only under guidance
            raise ValueError("cfg_scale: DDIM CFG++ needs a CFG scale above 1")
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(f"width: {self.width}x{self.height} is over the {MAX_PIXELS // 1_000_000} "
                             "megapixel limit")
        if self.width * self.height * self.batch_size > MAX_BATCH_PIXELS:
            raise ValueError("batch_size: width × height × batch_size is too large; lower batch_size")
        if self.batch_size * self.n_iter > MAX_IMAGES:
            raise ValueError(f"n_iter: batch_size × n_iter is {self.batch_size * self.n_iter}; one request makes at "
                             f"most {MAX_IMAGES} images")
        if self.hr_sampler_name is not None:
            self.hr_sampler_name, self.hr_scheduler = samplers.resolve(self.hr_sampler_name,
                                                                       self.hr_scheduler or "Automatic")
        elif self.hr_scheduler is not None:
            self.hr_scheduler = samplers.resolve(self.sampler_name, self.hr_scheduler)[1]
        if self.enable_hr and not self.init_images:
            width, height = HiresPlan.of(self).target
            if width * height * self.batch_size > MAX_BATCH_PIXELS or width * height > MAX_PIXELS:
                raise ValueError(f"hr_scale: the hires size {width}x{height} is over the "
                                 f"{MAX_PIXELS // 1_000_000} megapixel limit")
        if self.mask is not None and not self.init_images:
            raise ValueError("mask: a mask needs an init image")
        return self

    @model_validator(mode="after")
    def _known_extension_scripts(self, info: ValidationInfo) -> "GenerationRequest":
        host = (info.context or {}).get("scripts")
        if host is None:
            return self
        runner = host.runner(bool(self.init_images))
        if self.selected_script is not None:
            found = runner.find_selectable(self.selected_script)
            if found is None:
                raise ValueError(f"script_name: unknown script {self.selected_script!r}; choose one of "
                                 f"{[script.name for script in runner.selectable_scripts]}")
            self.selected_script = found.name
        for name, args in self.extension_scripts.items():
            script = runner.find_alwayson(name) or runner.find_selectable(name)
            if script is None:
                raise ValueError(f"alwayson_scripts: no script named {name!r} in this tab")
            runner.args_for(script, args)   # raises when too many are given
        return self


def validate_request(data: dict, registry=None, networks=None, upscalers=None, controlnet=None, scripts=None
                     ) -> GenerationRequest:
    """The one validator shared by the UI and the API (raises pydantic.ValidationError)."""
    return GenerationRequest.model_validate(data, context={"registry": registry, "networks": networks,
                                                          "upscalers": upscalers, "controlnet": controlnet,
                                                          "scripts": scripts})
