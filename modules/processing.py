"""The generation core: the typed request, and running it on a loaded model.

UI, API, scripts and extensions all build a `GenerationRequest` (validated once, here) and submit it to
the job queue; `Generator.txt2img` runs inside the worker. diffusers' pipelines do the maths: this
module picks the pipeline, scheduler, conditioning and noise, and writes the results A1111-style.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from modules import extra_networks, images, masking
from modules.diffusion import compilation, noise, previews, samplers, sampling, stop_points, token_merging, warmup
from modules.generation import img2img, img2img_scripts
from modules.output import infotext
from modules.addons import script_processing
from modules.controlnet import plan as controlnet_plan
from modules.controlnet.units import MAX_UNITS, ControlNetUnit
from modules.networks import hypernetwork, lora, textual_inversion, vae
from modules.networks.cards import read_user_metadata
from modules.networks.vae import VaeLoadError, swapped_vae
from modules.devices import FULL
from modules.jobs import Job, JobError
from modules.models.manager import CheckpointLoadError, CheckpointNotFound, LoadedModel, ModelManager
from modules.options import Options
from modules.paths import Paths
from modules.prompts import conditioning, limits
from modules.script_callbacks import ImageSaveParams
from modules.addons.script_loading import ScriptHost
# A1111's processing API for scripts and extensions (`from modules.processing import process_images, ...`)
from modules.addons.script_processing import (Processed, StableDiffusionProcessing,  # noqa: F401  (re-exported)
                                       StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img,
                                       fix_seed, get_fixed_seed, process_images)
from modules.postprocess.upscalers import UpscalerError, upscale_latents
from modules.version import INFOTEXT_VERSION

log = logging.getLogger(__name__)

MAX_PIXELS = 2048 * 2048          # one image
MAX_BATCH_PIXELS = 2048 * 2048 * 4  # one batch, checked before anything is allocated
MAX_PROMPT_CHARS = 100_000
MAX_IMAGES = 1000                 # one request (A1111's UI goes up to 100 batches of 8)


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
    clip_skip: int | None = Field(None, ge=1, le=12)
    tiling: bool = False
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

    # img2img scripts (A1111 script dropdown): None, "Loopback", "Poor man's outpainting", "Outpainting mk2",
    # "SD upscale"; script_args holds that script's arguments by name.
    script_name: str | None = None
    script_args: dict[str, Any] = Field(default_factory=dict)

    # Scripts loaded from scripts/ and extensions (modules.scripts): the chosen dropdown script's name, and the
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

    @field_validator("script_name")
    @classmethod
    def _known_script(cls, value: str | None) -> str | None:
        if not value or value == "None":
            return None
        found = img2img_scripts.find(value)
        if found is None:
            raise ValueError(f"unknown script {value!r}; choose one of {list(img2img_scripts.SCRIPTS)}")
        return found

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
            width, height = _HiresPlan.of(self).target
            if width * height * self.batch_size > MAX_BATCH_PIXELS or width * height > MAX_PIXELS:
                raise ValueError(f"hr_scale: the hires size {width}x{height} is over the "
                                 f"{MAX_PIXELS // 1_000_000} megapixel limit")
        if self.mask is not None and not self.init_images:
            raise ValueError("mask: a mask needs an init image")
        if self.script_name is not None:
            self.script_args = img2img_scripts.check_args(self.script_name, self.script_args)
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


@dataclass
class GenerationResult:
    images: list[Image.Image]           # grid first when one was made (A1111 return_grid)
    infotexts: list[str]                # one per image in `images`
    seeds: list[int]
    subseeds: list[int]
    request: GenerationRequest
    index_of_first_image: int = 0
    saved: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # add-ons that could not be used, said before sampling
    info: dict = field(default_factory=dict)
    detected_maps: list[Image.Image] = field(default_factory=list)   # ControlNet annotations, shown after images

    def info_json(self) -> str:
        return json.dumps(self.info, ensure_ascii=False)


@dataclass
class _Refiner:
    model: LoadedModel
    switch_at: float


@dataclass
class _HiresPlan:
    """A1111's hires-fix sizes: `cover` is what the first pass is upscaled to, `target` the final size."""

    cover: tuple[int, int]
    target: tuple[int, int]

    @classmethod
    def of(cls, request: GenerationRequest) -> "_HiresPlan":
        width, height = request.width, request.height
        rx, ry = request.hr_resize_x, request.hr_resize_y
        if not rx and not ry:
            cover = (int(width * request.hr_scale), int(height * request.hr_scale))
            target = cover
        elif not ry:
            cover = target = (rx, rx * height // width)
        elif not rx:
            cover = target = (ry * width // height, ry)
        else:   # both: scale to cover the box, then crop to it
            target = (rx, ry)
            cover = (rx, rx * height // width) if width / height < rx / ry else (ry * width // height, ry)

        def multiple_of_8(size):
            return max(64, size[0] // 8 * 8), max(64, size[1] // 8 * 8)
        return cls(multiple_of_8(cover), multiple_of_8(target))

    def infotext(self, request: GenerationRequest) -> dict:
        """A1111's Hires keys, in its order."""
        params: dict = {}
        if request.hr_resize_x or request.hr_resize_y:
            params["Hires resize"] = f"{request.hr_resize_x}x{request.hr_resize_y}"
        else:
            scale = request.hr_scale   # written as A1111 shows it: "2", "1.5"
            params["Hires upscale"] = int(scale) if float(scale).is_integer() else scale
        if request.hr_second_pass_steps:
            params["Hires steps"] = request.hr_second_pass_steps
        params["Hires upscaler"] = request.hr_upscaler
        if request.hr_sampler_name and request.hr_sampler_name != request.sampler_name:
            params["Hires sampler"] = request.hr_sampler_name
        if request.hr_scheduler and request.hr_scheduler != request.scheduler:
            params["Hires schedule type"] = request.hr_scheduler
        if request.hr_prompt and request.hr_prompt != request.prompt:
            params["Hires prompt"] = request.hr_prompt
        if request.hr_negative_prompt and request.hr_negative_prompt != request.negative_prompt:
            params["Hires negative prompt"] = request.hr_negative_prompt
        return params


def _new_interrupt(job: Job):
    """For a decode: stop on an interrupt that comes while it runs. A batch whose sampling an interrupt cut short is
    still decoded, as A1111 shows that image."""
    already = job.interrupted
    return lambda: job.interrupted and not already


class Generator:
    """Runs requests on the models of a ModelManager; lives in the job worker."""

    def __init__(self, manager: ModelManager, options: Options, paths: Paths,
                 networks: extra_networks.ExtraNetworks, *, upscalers=None, controlnet=None,
                 previews: "previews.Previews | None" = None, prompt_history: bool = True):
        self.manager = manager
        self.controlnet = controlnet
        self.networks = networks
        self.options = options
        self.paths = paths
        self.upscalers = upscalers
        self.prompt_history = prompt_history
        self.previews = previews
        self._warmed: weakref.WeakSet = weakref.WeakSet()   # pipelines warmed up after loading
        self.scripts = ScriptHost()   # replaced by the loaded one (services.load_scripts)

    def load(self, checkpoint: str | None, *, make_current: bool = True, remember: bool = True,
             warm: bool = False) -> LoadedModel:
        """The checkpoint, loaded and current; with `warm` (load jobs), warmed up the first time (modules.warmup)."""
        try:
            model = self.manager.get(checkpoint, make_current=make_current, remember=remember)
        except CheckpointNotFound as error:
            raise JobError(str(error), status=404 if checkpoint else 409) from None
        except CheckpointLoadError as error:
            raise JobError(str(error), status=422) from None
        if warm:
            self._warm_up(model)
        return model

    def _compile(self, model: LoadedModel) -> None:
        compilation.apply(model.pipeline, self.options.compile_unet, bool(self.options.compile_vae),
                          cuda=self.manager.devices.is_cuda, memory=self.manager.placement.mode(model))

    def _warm_up(self, model: LoadedModel) -> None:
        """On CUDA with the whole model on the GPU (the offloading modes are slow for other reasons), once per
        loaded model. A failed warm-up is logged and never fails the load."""
        devices = self.manager.devices
        if (not devices.is_cuda or not self.options.warmup_after_load or model.pipeline in self._warmed
                or self.manager.placement.mode(model) != FULL):
            return
        self._warmed.add(model.pipeline)
        try:
            self._compile(model)   # with compile_unet the warm-up compiles the native size, not the first image
            warmup.warm_up(model, devices.device, nan_check=devices.nan_check)
        except torch.OutOfMemoryError:
            log.warning("not enough GPU memory to warm up %s at its native size", model.info.name)
        except Exception:  # noqa: BLE001 - the model is loaded and usable; the warm-up only saves time
            log.exception("warming up %s failed", model.info.name)
        finally:
            self.manager.release_memory()

    def txt2img(self, request: GenerationRequest, job: Job) -> GenerationResult:
        if request.init_images:
            raise JobError("init_images: txt2img takes no init image; use img2img", status=422)
        return self._guarded(request, self._run, request, job)

    def img2img(self, request: GenerationRequest, job: Job) -> GenerationResult:
        if not request.init_images:
            raise JobError("init_images: img2img needs an image to start from", status=422)
        if request.script_name:
            return self._guarded(request, img2img_scripts.run, self, request, job)
        return self._guarded(request, self._run, request, job)

    def _run(self, request: GenerationRequest, job: Job) -> GenerationResult:
        """Through the scripts when the tab has any that take part (always-on ones, or a chosen one)."""
        runner = self.scripts.runner(bool(request.init_images))
        if runner.alwayson_scripts or request.selected_script:
            return script_processing.run_with_scripts(self, request, job, runner)
        return self.generate(request, job)

    def _guarded(self, request: GenerationRequest, run, *args):
        """Run with the request's option overrides; out of memory becomes a clear error with memory freed."""
        try:
            with self.options.overridden(request.option_overrides):
                return run(*args)
        except limits.PromptTooLarge as error:   # after styles and embeddings: longer than the request looked
            raise JobError(f"prompt: {error}", status=422) from None
        except UpscalerError as error:   # a script's upscaler (SD upscale) that cannot be used; it names the file
            raise JobError(str(error), status=422) from None
        except torch.OutOfMemoryError:
            pass   # freed below, outside this block: the exception's traceback holds the failed job's tensors
        if self.controlnet is not None:   # ControlNets and annotators load again when next needed
            self.controlnet.models.clear()
            self.controlnet.preprocessors.unload()
        self.manager.release_memory()
        raise JobError("out of GPU memory: lower the size or batch size, or use --medvram", status=507)

    def generate(self, request: GenerationRequest, job: Job, extra_params: dict | None = None,
                 hooks: "script_processing.ScriptHooks | None" = None) -> GenerationResult:
        """One request, txt2img or img2img by whether it has init images (scripts call this for each step);
        `extra_params` are more infotext keys (a script's); `hooks` the scripts' per-batch and per-image hooks."""
        image_mode = bool(request.init_images)
        # A checkpoint named by the request is used for it, not remembered as the user's choice.
        model = self.load(request.checkpoint, remember=False)
        if model.family == "sdxl_refiner" and not image_mode:
            raise JobError(f"{model.info.name} is an SDXL refiner: it refines images from a base model "
                           "and cannot generate on its own. Choose an SDXL base checkpoint, and this one as "
                           "the Refiner.")
        refiner = self._refiner_for(request, model)
        pipe = model.pipeline
        prepared = extra_networks.prepare_prompt(request.prompt, request.negative_prompt, request.styles,
                                                 self.networks)
        limits.check(prepared.prompt)
        limits.check(prepared.negative, positive=False)
        vae_info, external_vae = self._vae_for(request, model)
        self.networks.embeddings.refresh()   # cheap: re-reads only files that changed, as A1111 picks up new ones
        clip_skip = request.clip_skip or int(self.options.CLIP_stop_at_last_layers)
        encoder = self._encoder(model, clip_skip, job)
        seed = noise.resolve_seed(request.seed)
        subseed = noise.resolve_seed(request.subseed)
        # Progress counts the job's batches: a script running many generations in one job (X/Y/Z cells, loops)
        # keeps counting on, up to the total it announced.
        job.image_count = max(job.image_count, job.batches_done + request.n_iter)
        job.textinfo = "Encoding prompt"
        resize_from = None
        if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0:
            resize_from = (request.seed_resize_from_h, request.seed_resize_from_w)
        inputs = None
        if image_mode:
            inputs = img2img.prepare(request, background=self.options.img2img_background_color,
                                     upscale=self._img2img_upscaler())
        hires = _HiresPlan.of(request) if request.enable_hr and not image_mode else None
        controls = self._controls(request, model, inputs)
        first_controls = controlnet_plan.pass_controls(
            controls, request.width, request.height, hires_pass=False, hires_enabled=hires is not None,
            region=inputs.region if inputs else None, source_size=request.init_images[0].size if inputs else None)
        tome_ratio, tome_hires_ratio = token_merging.ratios(self.options, image_mode=image_mode)
        hires_controls = (controlnet_plan.pass_controls(controls, *hires.target, hires_pass=True, hires_enabled=True)
                          if hires else [])

        result_images, infotexts, seeds, subseeds = [], [], [], []
        saved: list[str] = []
        outdir = "img2img" if image_mode else "txt2img"
        warnings = list(prepared.warnings)
        # An interrupt while networks load, the prompt is encoded or a batch's first step runs ends the job with the
        # images made so far (stop_points); the ExitStack still takes the job's networks off.
        with contextlib.ExitStack() as stack, contextlib.suppress(stop_points.Interrupted):
            # LoRAs and the VAE are applied for this job only and removed on the way out, even on errors.
            applied_loras = stack.enter_context(
                lora.applied(pipe, model.family, prepared.loras, self.networks.lora_cache,
                             should_stop=lambda: job.interrupted))
            warnings += list(applied_loras) + list(stack.enter_context(
                hypernetwork.applied(pipe, prepared.hypernetworks, self.networks.hypernetwork_cache,
                                     should_stop=lambda: job.interrupted)))
            stack.enter_context(swapped_vae(pipe, external_vae))
            for used in (model, *([refiner.model] if refiner else [])):   # compile_unet (the VAE swapped in too)
                self._compile(used)
            # medvram/lowvram: offload hooks on once the job's weights are in place, off before they are removed
            stack.enter_context(self.manager.placement.job(model, *([refiner.model] if refiner else [])))
            first_steps = request.steps
            if image_mode:
                first_steps = sampling.steps_for_strength(request.steps, request.denoising_strength,
                                                          exact=bool(self.options.img2img_fix_steps))
            runs = first_steps if not image_mode else int(first_steps * request.denoising_strength)
            plan = conditioning.schedule(encoder, prepared.text, prepared.negative_text, max(runs, 1))
            job_params = self._job_params(applied_loras.loras, encoder, vae_info)
            encoded = self._encode_inputs(model, inputs, job) if inputs is not None else None
            for warning in warnings:
                log.warning("%s", warning)
            for batch_index in range(request.n_iter):
                if job.interrupted:
                    break
                job.image_index = job.batches_done
                job.textinfo = f"Batch {job.image_index + 1} of {job.image_count}"
                first = batch_index * request.batch_size
                batch_seeds = [seed + first + i for i in range(request.batch_size)]
                batch_subseeds = [subseed + first + i for i in range(request.batch_size)]

                def seed_noise(width: int, height: int) -> torch.Tensor:
                    scale = sampling.vae_scale(pipe)
                    shape = (pipe.vae.config.latent_channels, height // scale, width // scale)
                    return noise.batch_noise(batch_seeds, batch_subseeds, request.subseed_strength, shape,
                                             resize_from, self.manager.devices.device,
                                             self.options.randn_source)

                first_noise = seed_noise(request.width, request.height)
                step = sampling.Pass(request.sampler_name, request.scheduler, first_steps, request.cfg_scale,
                                     request.width, request.height, plan, first_noise, seeds=batch_seeds,
                                     controls=first_controls, token_merging_ratio=tome_ratio)
                if encoded is not None:
                    self._add_image(step, request, inputs, encoded, first, first_noise)
                if hooks is not None:
                    hooks.before_batch(batch_index, [prepared.prompt] * request.batch_size, batch_seeds,
                                       batch_subseeds)
                last_pass = hires is None
                try:
                    with sampling.circular_padding([pipe.unet, pipe.vae], request.tiling):
                        latents = self._run_pass(model, step, job, refiner if last_pass else None, prepared)
                        if hires is not None and not job.interrupted:
                            latents = self._hires_pass(model, request, hires, latents, job, encoder, prepared,
                                                       seed_noise, batch_seeds, refiner, hires_controls)
                        decoded = sampling.decode(pipe, latents, nan_check=self.manager.devices.nan_check,
                                                  should_stop=_new_interrupt(job))
                except stop_points.Interrupted:
                    if job.interrupted:
                        raise
                    job.batches_done += 1   # skipped before its first step finished: no image from this batch
                    job.consume_skip()
                    continue
                if hooks is not None:   # scripts may drop or add images: seeds follow (an added image gets the last)
                    decoded = hooks.after_batch(decoded, batch_index)
                    batch_seeds = (batch_seeds + batch_seeds[-1:] * len(decoded))[:len(decoded)]
                    batch_subseeds = (batch_subseeds + batch_subseeds[-1:] * len(decoded))[:len(decoded)]
                extra = {**img2img.infotext_params(request), **(hires.infotext(request) if hires else {}),
                         **self._refiner_params(request, refiner), **(extra_params or {}),
                         **controlnet_plan.infotext_params(controls, hires is not None),
                         "Token merging ratio": tome_ratio or None,
                         "Token merging ratio hr": tome_hires_ratio if hires and tome_hires_ratio else None}
                for index, image in enumerate(decoded):
                    if inputs is not None and index < request.batch_size:
                        image = img2img.finish(image, inputs, first + index)
                    if hooks is not None:
                        image = hooks.postprocess_image(image)
                    text = self._infotext(model, request, prepared, job_params, clip_skip, batch_seeds[index],
                                          batch_subseeds[index], extra, image_mode or hires is not None)
                    if request.save_images and self.options.samples_save:
                        saved.append(str(self.save(image, f"outdir_{outdir}_samples", batch_seeds[index], text,
                                                   p=hooks.p if hooks else None)))
                    image.info["parameters"] = text
                    result_images.append(image)
                    infotexts.append(text)
                seeds += batch_seeds
                subseeds += batch_subseeds
                job.batches_done += 1
                job.consume_skip()

        index_of_first = 0
        if request.save_grid and len(result_images) > 1 and self.options.grid_save:
            grid = images.make_grid(result_images)
            text = infotexts[0]
            saved.append(str(self.save(grid, f"outdir_{outdir}_grids", seeds[0], text, grid=True,
                                       p=hooks.p if hooks else None)))
            grid.info["parameters"] = text
            result_images.insert(0, grid)
            infotexts.insert(0, text)
            index_of_first = 1
        if infotexts and self.prompt_history:
            self._write_params(infotexts[-1])
        result = GenerationResult(images=result_images, infotexts=infotexts, seeds=seeds, subseeds=subseeds,
                                  request=request, index_of_first_image=index_of_first, saved=saved,
                                  warnings=warnings, detected_maps=self._detected_maps(controls, seed))
        result.info = self._info_dict(model, request, prepared, vae_info, result, clip_skip)
        return result

    # ------------------------------------------------------------- the parts of a generation

    def _vae_for(self, request: GenerationRequest, model: LoadedModel):
        """The external VAE this job uses (None: the checkpoint's own), A1111's `sd_vae` rules."""
        setting = request.vae or self.options.sd_vae
        try:
            info = self.networks.vaes.resolve(
                setting, model.info, preferred=read_user_metadata(model.info.filename).get("vae"),
                setting_overrides_preferred=self.options.sd_vae_overrides_per_model_preferences)
            vae_dtype = self.manager.devices.vae_dtype_for(model.family)
            loaded = self.networks.vae_cache.get(info, model.spec, vae_dtype) if info else None
        except (ValueError, VaeLoadError) as error:
            raise JobError(f"VAE: {error}", status=422) from None
        return info, loaded


    def _encoder(self, model: LoadedModel, clip_skip: int, job: Job) -> conditioning.TextEncoder:
        embeddings, _ = self.networks.embeddings.for_model(textual_inversion.encoder_widths(model.pipeline))
        return conditioning.TextEncoder(model.pipeline, model.family, clip_skip=clip_skip,
                                        emphasis=self.options.emphasis, embeddings=embeddings,
                                        should_stop=lambda: job.interrupted)

    def _controls(self, request: GenerationRequest, model: LoadedModel, inputs) -> list:
        """The job's ControlNet units, annotated and loaded once (each pass resizes their maps)."""
        if not any(unit.enabled for unit in request.controlnet_units):
            return []
        if self.controlnet is None:
            raise JobError("controlnet_units: ControlNet is not available in this server", status=422)
        init_image = request.init_images[0].convert("RGB") if request.init_images else None
        try:
            return self.controlnet.prepare(request.controlnet_units, model.family, request.width, request.height,
                                           init_image)
        except controlnet_plan.ControlNetError as error:
            raise JobError(f"controlnet_units: {error}", status=422) from None

    def _detected_maps(self, controls: list, seed: int) -> list[Image.Image]:
        """The annotations to show after the images (the extension's side-by-side view), saved if asked."""
        if self.options.control_net_no_detectmap:
            return []
        maps = [unit.detected_map for unit in controls if unit.unit.save_detected_map]
        if self.options.control_net_detectmap_autosaving:
            for detected in maps:
                self.save(detected, "control_net_detectedmap_dir", seed, "")
        return maps

    def _img2img_upscaler(self):
        """A1111's upscaler_for_img2img: used when a resize enlarges the input ("None" = Lanczos)."""
        name = self.options.upscaler_for_img2img
        if self.upscalers is None or not name or name == "None" or self.upscalers.find(name) is None:
            return None
        return lambda image, scale: self.upscalers.upscale(image, scale, self.upscalers.find(name))

    def _encode_inputs(self, model: LoadedModel, inputs: img2img.ImageInputs, job: Job) -> dict:
        """Each distinct init image encoded once per job (and its masked version for inpainting models)."""
        pipe = model.pipeline
        stop = lambda: job.interrupted  # noqa: E731
        latents = [sampling.encode(pipe, [image], should_stop=stop) for image in inputs.images]
        masked = ([sampling.encode_masked(pipe, [image], inputs.mask, should_stop=stop) for image in inputs.images]
                  if model.spec.inpainting else None)
        return {"latents": latents, "masked": masked}

    def _add_image(self, step: sampling.Pass, request: GenerationRequest, inputs: img2img.ImageInputs,
                   encoded: dict, first: int, batch_noise: torch.Tensor) -> None:
        """Make `step` an img2img/inpaint pass from the job's init images (cycled over the batch)."""
        count = batch_noise.shape[0]
        picks = [(first + i) % len(inputs.images) for i in range(count)]
        latents = torch.cat([encoded["latents"][i] for i in picks]).to(batch_noise.device)
        if latents.shape[2:] != batch_noise.shape[2:]:   # "Just resize (latent upscale)"
            latents = upscale_latents(latents, batch_noise.shape[2], batch_noise.shape[3], "Latent")
        step.init_latents = img2img.fill_latents(latents, inputs.mask, request.inpainting_fill, batch_noise)
        step.mask = inputs.mask
        if encoded["masked"] is not None:
            step.masked_image_latents = torch.cat([encoded["masked"][i] for i in picks]).to(batch_noise.device)
        step.strength = request.denoising_strength

    def _run_pass(self, model: LoadedModel, step: sampling.Pass, job: Job, refiner: "_Refiner | None",
                  prepared) -> torch.Tensor:
        """One pass; with a refiner, the base stops at "switch at" and the refiner does the remaining steps."""
        every = int(self.options.show_progress_every_n_steps)
        runs = step.runs_steps
        if runs < 1:   # denoising strength 0: nothing to denoise, the image stays as it is
            return step.init_latents
        # The base does at least one step, so there is always something for the refiner to continue from.
        switch = max(1, int(runs * refiner.switch_at)) if refiner is not None else runs
        if refiner is None or switch >= runs:
            return sampling.denoise(model, model.pipeline, step, job, preview=self._preview(model),
                                    preview_every=every, callbacks=self.scripts.callbacks)
        step.stop_after = switch
        latents = sampling.denoise(model, model.pipeline, step, job, preview=self._preview(model),
                                   preview_every=every, progress_total=runs, callbacks=self.scripts.callbacks)
        if job.should_stop:
            return latents
        self.manager.placement.release(model)
        job.textinfo = f"Refiner: {refiner.model.info.name}"
        encoder = self._encoder(refiner.model, 1, job)
        remaining = runs - switch
        refined = dataclasses.replace(
            step, plan=conditioning.schedule(encoder, prepared.text, prepared.negative_text, remaining),
            init_latents=step.init_latents if step.init_latents is not None else latents, start_latents=latents,
            masked_image_latents=None, strength=sampling.strength_for_remaining(remaining, step.steps),
            stop_after=None, controls=[])   # ControlNets fit the base model's UNet, not the refiner's
        return sampling.denoise(refiner.model, refiner.model.pipeline, refined, job,
                                preview=self._preview(refiner.model), preview_every=every, progress_offset=switch,
                                progress_total=runs, callbacks=self.scripts.callbacks)

    def _preview(self, model: LoadedModel):
        """The live-preview maker for a pass on `model` (show_progress_type), or None when previews are off."""
        if not self.options.live_previews_enable:
            return None
        method = self.options.show_progress_type
        if self.previews is None:
            def render(latent):
                return previews.latent_preview(latent[0], model.family)
        elif method == "Full":
            # The checkpoint's own VAE: only the job's thread may run it (offload hooks, the fp32 NaN fallback),
            # so this preview is made now, in the sampling loop; it is slow anyway, and chosen knowingly.
            return lambda latents, pipeline: self.previews.image(latents, model.family, method, pipeline)
        else:
            def render(latent):
                return self.previews.image(latent, model.family, method)
        return lambda latents, pipeline: previews.deferred(render, latents)

    def _refiner_for(self, request: GenerationRequest, model: LoadedModel) -> "_Refiner | None":
        if not request.refiner_checkpoint or request.refiner_switch_at >= 1.0:
            return None
        refiner = self.load(request.refiner_checkpoint, make_current=False)
        if refiner.info.name == model.info.name:
            return None
        if refiner.family.startswith("sdxl") != model.family.startswith("sdxl") or refiner.spec.inpainting:
            raise JobError(f"refiner_checkpoint: {refiner.info.name} ({refiner.spec.label}) cannot refine "
                           f"{model.info.name} ({model.spec.label})")
        return _Refiner(refiner, request.refiner_switch_at)

    def _refiner_params(self, request: GenerationRequest, refiner: "_Refiner | None") -> dict:
        if refiner is None:
            return {}
        return {"Refiner": f"{refiner.model.info.name} [{refiner.model.info.shorthash}]"
                if refiner.model.info.shorthash else refiner.model.info.name,
                "Refiner switch at": refiner.switch_at}

    def _hires_pass(self, model: LoadedModel, request: GenerationRequest, hires: "_HiresPlan",
                    latents: torch.Tensor, job: Job, encoder, prepared, seed_noise, seeds: list[int],
                    refiner, controls: list) -> torch.Tensor:
        """Upscale the first pass (in latent space, or decoded, upscaled and encoded again) and denoise again."""
        pipe = model.pipeline
        job.textinfo = "Hires fix"
        width, height = hires.target
        if self.upscalers is not None and self.upscalers.is_latent(request.hr_upscaler):
            scale = sampling.vae_scale(pipe)
            cover_w, cover_h = hires.cover
            upscaled = upscale_latents(latents, cover_h // scale, cover_w // scale, request.hr_upscaler)
            top, left = (cover_h - height) // scale // 2, (cover_w - width) // scale // 2
            upscaled = upscaled[:, :, top:top + height // scale, left:left + width // scale]
        else:
            decoded = sampling.decode(pipe, latents, nan_check=self.manager.devices.nan_check,
                                      should_stop=lambda: job.interrupted)
            pictures = [self._upscale_to(image, width, height, request.hr_upscaler) for image in decoded]
            upscaled = torch.cat([sampling.encode(pipe, [picture], should_stop=lambda: job.interrupted)
                                  for picture in pictures])
        steps = request.hr_second_pass_steps or request.steps
        schedule = sampling.steps_for_strength(steps, request.denoising_strength, exact=True)
        runs = int(schedule * request.denoising_strength)
        text, negative = prepared.text, prepared.negative_text
        if request.hr_prompt or request.hr_negative_prompt:
            hr = extra_networks.prepare_prompt(request.hr_prompt or request.prompt,
                                               request.hr_negative_prompt or request.negative_prompt,
                                               request.styles, self.networks)
            text, negative = hr.text, hr.negative_text
        plan = conditioning.schedule(encoder, text, negative, max(runs, 1))
        step = sampling.Pass(request.hr_sampler_name or request.sampler_name,
                             request.hr_scheduler or request.scheduler, schedule, request.cfg_scale, width, height,
                             plan, seed_noise(width, height), init_latents=upscaled.to(self.manager.devices.device),
                             strength=request.denoising_strength, seeds=seeds, controls=controls,
                             token_merging_ratio=token_merging.ratios(self.options, image_mode=False)[1])
        if model.spec.inpainting:   # the whole image is repainted: its conditioning image is all blank
            blank = sampling.encode_masked(pipe, [Image.new("RGB", (width, height))], None)
            step.masked_image_latents = blank.repeat(upscaled.shape[0], 1, 1, 1)
        return self._run_pass(model, step, job, refiner, prepared)

    def _upscale_to(self, image: Image.Image, width: int, height: int, upscaler: str) -> Image.Image:
        """A pixel upscaler to cover width×height, then A1111's crop to the exact size."""
        scale = max(width / image.width, height / image.height)
        if self.upscalers is not None and upscaler not in ("None", None):
            try:
                image = self.upscalers.upscale(image, scale, upscaler)
            except UpscalerError as error:
                raise JobError(f"hr_upscaler: {error}", status=422) from None
        return masking.resize_image(1, image, width, height)

    # ------------------------------------------------------------- infotext and files

    def _job_params(self, used_loras: list, encoder, vae_info) -> dict:
        """Infotext values that are the same for every image of the job."""
        opts = self.options
        return {
            "vae": vae.infotext_params(vae_info, add_hash=opts.add_vae_hash_to_info,
                                       add_name=opts.add_vae_name_to_info),
            "extra": {
                "Lora hashes": lora.infotext_hashes(used_loras) if used_loras else None,
                "TI hashes": (textual_inversion.ti_hashes(encoder.used_embeddings.values())
                              if encoder.used_embeddings else None),
                "Emphasis": opts.emphasis if opts.emphasis != "Original" else None,
            },
        }

    def _infotext(self, model: LoadedModel, request: GenerationRequest, prepared, job_params: dict, clip_skip: int,
                  seed: int, subseed: int, extra: dict, denoised: bool) -> str:
        opts = self.options
        variation = request.subseed_strength > 0
        params = {
            "Steps": request.steps,
            "Sampler": request.sampler_name,
            # A1111 writes the chosen schedule, replaced by the one its sampler really used when they differ.
            "Schedule type": samplers.infotext_schedule(request.sampler_name, request.scheduler) or request.scheduler,
            "CFG scale": request.cfg_scale,
            "Seed": seed,
            "Size": f"{request.width}x{request.height}",
            "Model hash": model.info.shorthash if opts.add_model_hash_to_info else None,
            "Model": model.info.stem if opts.add_model_name_to_info else None,
            **job_params["vae"],
            "Variation seed": subseed if variation else None,
            "Variation seed strength": request.subseed_strength if variation else None,
            "Seed resize from": (f"{request.seed_resize_from_w}x{request.seed_resize_from_h}"
                                 if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0 else None),
            "Denoising strength": request.denoising_strength if denoised else None,
            "Clip skip": clip_skip if clip_skip > 1 and not model.family.startswith("sdxl") else None,
            "RNG": opts.randn_source if opts.randn_source != "GPU" else None,
            "Tiling": True if request.tiling else None,
            "Version": INFOTEXT_VERSION if opts.add_version_to_infotext else None,
        }
        return infotext.create_infotext(prepared.prompt, prepared.negative, params, {**extra, **job_params["extra"]})

    def _pnginfo(self, text: str) -> str | None:
        return text if self.options.enable_pnginfo else None

    def _outdir(self, option: str):
        configured = self.options.get(option) or ""
        folder = self.paths.data / configured
        return folder.resolve()

    def save(self, image: Image.Image, option: str, seed: int, text: str, *, grid: bool = False, p=None):
        """Save one image (or grid) where `option` says; extensions' before/after image-saved callbacks run
        around it (they may replace the image or its infotext)."""
        opts = self.options
        save = images.save_grid if grid else images.save_image
        folder = self._outdir(option)
        params = ImageSaveParams(image, p, str(folder), {"parameters": text})
        self.scripts.callbacks.before_image_saved(params)
        try:
            path = save(params.image, folder, seed=seed, infotext=self._pnginfo(params.pnginfo.get("parameters", "")),
                        extension=opts.grid_format if grid else opts.samples_format,
                        save_to_dirs=opts.grid_save_to_dirs if grid else opts.save_to_dirs)
        except OSError as error:   # disk full, read-only folder...: nothing partial was left behind
            raise JobError(f"could not save the image: {error.strerror or error}", status=507) from None
        params.filename = str(path)
        self.scripts.callbacks.image_saved(params)
        return path

    def _write_params(self, text: str) -> None:
        try:
            self.paths.params_file.write_text(text, encoding="utf-8")
        except OSError as error:
            log.warning("could not write %s: %s", self.paths.params_file, error)

    def _info_dict(self, model: LoadedModel, request: GenerationRequest, prepared, vae_info,
                   result: GenerationResult, clip_skip: int) -> dict:
        """A1111's `Processed.js()`: what API clients read from the `info` JSON string."""
        count = len(result.seeds)
        return {
            "prompt": prepared.prompt, "all_prompts": [prepared.prompt] * count,
            "negative_prompt": prepared.negative, "all_negative_prompts": [prepared.negative] * count,
            "seed": result.seeds[0] if result.seeds else -1, "all_seeds": result.seeds,
            "subseed": result.subseeds[0] if result.subseeds else -1, "all_subseeds": result.subseeds,
            "subseed_strength": request.subseed_strength, "width": request.width, "height": request.height,
            "sampler_name": request.sampler_name, "cfg_scale": request.cfg_scale, "steps": request.steps,
            "batch_size": request.batch_size, "restore_faces": False, "face_restoration_model": None,
            "sd_model_name": model.info.stem, "sd_model_hash": model.info.shorthash,
            "sd_vae_name": vae_info.stem if vae_info else None,
            "sd_vae_hash": vae_info.shorthash() if vae_info else None,
            "seed_resize_from_w": request.seed_resize_from_w, "seed_resize_from_h": request.seed_resize_from_h,
            "denoising_strength": request.denoising_strength if request.init_images or request.enable_hr else None,
            "extra_generation_params": {},
            "index_of_first_image": result.index_of_first_image, "infotexts": result.infotexts,
            "styles": list(request.styles), "warnings": result.warnings,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": clip_skip,
            "is_using_inpainting_conditioning": model.spec.inpainting, "version": INFOTEXT_VERSION,
            "scheduler": request.scheduler,
        }

