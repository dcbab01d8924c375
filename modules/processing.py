"""The generation core: the typed request, and running it on a loaded model.

UI, API, scripts and extensions all build a `GenerationRequest` (validated once, here) and submit it to
the job queue; `Generator.txt2img` runs inside the worker. diffusers' pipelines do the maths: this
module picks the pipeline, scheduler, conditioning and noise, and writes the results A1111-style.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from modules import extra_networks, images, infotext, noise, samplers
from modules.networks import hypernetwork, lora, textual_inversion, vae
from modules.networks.cards import read_user_metadata
from modules.networks.vae import VaeLoadError, swapped_vae
from modules.jobs import Job, JobError
from modules.models.manager import CheckpointLoadError, CheckpointNotFound, LoadedModel, ModelManager
from modules.options import Options
from modules.paths import Paths
from modules.prompts import conditioning
from modules.prompts.composable import composable_unet
from modules.version import INFOTEXT_VERSION

log = logging.getLogger(__name__)

MAX_PIXELS = 2048 * 2048          # one image
MAX_BATCH_PIXELS = 2048 * 2048 * 4  # one batch, checked before anything is allocated
MAX_PROMPT_CHARS = 100_000


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
        return self


def validate_request(data: dict, registry=None, networks=None) -> GenerationRequest:
    """The one validator shared by the UI and the API (raises pydantic.ValidationError)."""
    return GenerationRequest.model_validate(data, context={"registry": registry, "networks": networks})


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

    def info_json(self) -> str:
        return json.dumps(self.info, ensure_ascii=False)


# Cheap latent → RGB previews (A1111's "Approx cheap" coefficients).
_PREVIEW_COEFFICIENTS = {
    "sd": torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264],
                        [-0.184, -0.271, -0.473]]),
    "sdxl": torch.tensor([[0.3448, 0.4168, 0.4395], [-0.1953, -0.0290, 0.0250], [0.1074, 0.0886, -0.0163],
                          [-0.3730, -0.2499, -0.2088]]),
}


def latent_preview(latent: torch.Tensor, family: str) -> Image.Image:
    coefficients = _PREVIEW_COEFFICIENTS["sdxl" if family.startswith("sdxl") else "sd"]
    rgb = torch.einsum("lhw,lr->hwr", latent[:4].float().cpu(), coefficients)
    array = ((rgb + 1) * 127.5).clamp(0, 255).byte().numpy()
    return Image.fromarray(array)


@contextlib.contextmanager
def circular_padding(modules: list[torch.nn.Module], enabled: bool):
    """Seamless tiling: every convolution wraps around the image edges for the duration of a job."""
    if not enabled:
        yield
        return
    convs = [m for module in modules for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    previous = [conv.padding_mode for conv in convs]
    for conv in convs:
        conv.padding_mode = "circular"
    try:
        yield
    finally:
        for conv, mode in zip(convs, previous):
            conv.padding_mode = mode


class Generator:
    """Runs requests on the models of a ModelManager; lives in the job worker."""

    def __init__(self, manager: ModelManager, options: Options, paths: Paths,
                 networks: extra_networks.ExtraNetworks, *, prompt_history: bool = True):
        self.manager = manager
        self.networks = networks
        self.options = options
        self.paths = paths
        self.prompt_history = prompt_history

    def load(self, checkpoint: str | None) -> LoadedModel:
        try:
            return self.manager.get(checkpoint)
        except CheckpointNotFound as error:
            raise JobError(str(error), status=404 if checkpoint else 409) from None
        except CheckpointLoadError as error:
            raise JobError(str(error), status=422) from None

    def txt2img(self, request: GenerationRequest, job: Job) -> GenerationResult:
        try:
            return self._txt2img(request, job)
        except torch.OutOfMemoryError:
            self.manager.release_memory()   # nothing of the failed job may stay allocated
            raise JobError("out of GPU memory: lower the size or batch size, or use --medvram", status=507) from None

    def _txt2img(self, request: GenerationRequest, job: Job) -> GenerationResult:
        model = self.load(request.checkpoint)
        if model.family == "sdxl_refiner":
            raise JobError(f"{model.info.name} is an SDXL refiner: it refines images from a base model "
                           "and cannot generate on its own. Choose an SDXL base checkpoint.")
        pipe = model.pipeline
        prepared = extra_networks.prepare_prompt(request.prompt, request.negative_prompt, request.styles,
                                                 self.networks)
        vae_info, external_vae = self._vae_for(request, model)
        self.networks.embeddings.refresh()   # cheap: re-reads only files that changed, as A1111 picks up new ones
        embeddings, _ = self.networks.embeddings.for_model(textual_inversion.encoder_widths(pipe))
        clip_skip = request.clip_skip or int(self.options.CLIP_stop_at_last_layers)
        encoder = conditioning.TextEncoder(pipe, model.family, clip_skip=clip_skip, emphasis=self.options.emphasis,
                                           embeddings=embeddings)
        seed = noise.resolve_seed(request.seed)
        subseed = noise.resolve_seed(request.subseed)
        job.image_count = request.n_iter
        job.textinfo = "Encoding prompt"
        vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        latent_shape = (pipe.vae.config.latent_channels, request.height // vae_scale, request.width // vae_scale)
        resize_from = None
        if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0:
            resize_from = (request.seed_resize_from_h, request.seed_resize_from_w)

        result_images, infotexts, seeds, subseeds = [], [], [], []
        saved: list[str] = []
        with contextlib.ExitStack() as stack:
            # LoRAs and the VAE are applied for this job only and removed on the way out, even on errors.
            applied_loras = stack.enter_context(
                lora.applied(pipe, model.family, prepared.loras, self.networks.lora_cache))
            warnings = prepared.warnings + list(applied_loras) + list(stack.enter_context(
                hypernetwork.applied(pipe, prepared.hypernetworks, self.networks.hypernetwork_cache)))
            stack.enter_context(swapped_vae(pipe, external_vae))
            plan = conditioning.schedule(encoder, prepared.text, prepared.negative_text, request.steps)
            job_params = self._job_params(applied_loras.loras, encoder, vae_info)
            for warning in warnings:
                log.warning("%s", warning)
            for batch_index in range(request.n_iter):
                if job.interrupted:
                    break
                job.image_index = batch_index
                job.textinfo = f"Batch {batch_index + 1} of {request.n_iter}"
                first = batch_index * request.batch_size
                batch_seeds = [seed + first + i for i in range(request.batch_size)]
                batch_subseeds = [subseed + first + i for i in range(request.batch_size)]
                latents = noise.batch_noise(batch_seeds, batch_subseeds, request.subseed_strength, latent_shape,
                                            resize_from, pipe.unet.device, self.options.randn_source)
                with circular_padding([pipe.unet, pipe.vae], request.tiling):
                    decoded = self._decode(model, self._sample(model, request, job, plan, latents))
                for index, image in enumerate(decoded):
                    text = self._infotext(model, request, prepared, job_params, clip_skip, batch_seeds[index],
                                          batch_subseeds[index])
                    if request.save_images and self.options.samples_save:
                        saved.append(str(self._save(image, "outdir_txt2img_samples", batch_seeds[index], text)))
                    image.info["parameters"] = text
                    result_images.append(image)
                    infotexts.append(text)
                seeds += batch_seeds
                subseeds += batch_subseeds
                job.consume_skip()

        index_of_first = 0
        if request.save_grid and len(result_images) > 1 and self.options.grid_save:
            grid = images.make_grid(result_images)
            text = infotexts[0]
            saved.append(str(self._save(grid, "outdir_txt2img_grids", seeds[0], text, grid=True)))
            grid.info["parameters"] = text
            result_images.insert(0, grid)
            infotexts.insert(0, text)
            index_of_first = 1
        if infotexts and self.prompt_history:
            self._write_params(infotexts[-1])
        result = GenerationResult(images=result_images, infotexts=infotexts, seeds=seeds, subseeds=subseeds,
                                  request=request, index_of_first_image=index_of_first, saved=saved,
                                  warnings=warnings)
        result.info = self._info_dict(model, request, prepared, vae_info, result, clip_skip)
        return result

    def _vae_for(self, request: GenerationRequest, model: LoadedModel):
        """The external VAE this job uses (None: the checkpoint's own), A1111's `sd_vae` rules."""
        setting = request.vae or self.options.sd_vae
        try:
            info = self.networks.vaes.resolve(
                setting, model.info, preferred=read_user_metadata(model.info.filename).get("vae"),
                setting_overrides_preferred=self.options.sd_vae_overrides_per_model_preferences)
            loaded = self.networks.vae_cache.get(info, model.spec, self.manager.devices.vae_dtype) if info else None
        except (ValueError, VaeLoadError) as error:
            raise JobError(f"VAE: {error}", status=422) from None
        return info, loaded

    # ------------------------------------------------------------- sampling

    def _sample(self, model: LoadedModel, request, job: Job, plan: conditioning.ScheduledConditioning,
                latents) -> torch.Tensor:
        pipe = model.pipeline
        pipe.scheduler = samplers.create_scheduler(request.sampler_name, request.scheduler, model.scheduler_config,
                                                   steps=request.steps)
        batch = latents.shape[0]
        dtype = pipe.unet.dtype
        sdxl = model.family.startswith("sdxl")
        cond, uncond = plan.at(0)
        kwargs: dict[str, Any] = dict(
            prompt_embeds=cond.embeds.repeat(batch, 1, 1).to(dtype),
            negative_prompt_embeds=uncond.embeds.repeat(batch, 1, 1).to(dtype),
            latents=latents.to(dtype), num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
            height=request.height, width=request.width, output_type="latent",
            **samplers.call_kwargs(request.sampler_name),
        )
        if sdxl:
            kwargs.update(pooled_prompt_embeds=cond.pooled.repeat(batch, 1).to(dtype),
                          negative_pooled_prompt_embeds=uncond.pooled.repeat(batch, 1).to(dtype))
        if model.spec.inpainting:
            # txt2img on an inpainting model: everything masked, as A1111 conditions it.
            kwargs.update(image=Image.new("RGB", (request.width, request.height), (127, 127, 127)),
                          mask_image=Image.new("L", (request.width, request.height), 255), strength=1.0)
        tensor_inputs = ["latents"]
        if plan.changes:
            tensor_inputs += ["prompt_embeds", "add_text_embeds"] if sdxl else ["prompt_embeds"]
        preview_every = int(self.options.show_progress_every_n_steps)
        job.set_progress(0, request.steps)

        def step_conditioning(pipeline, step: int, callback_kwargs: dict) -> None:
            """Prompt editing and alternation: hand the pipeline the next step's conditioning (its CFG layout)."""
            cond, uncond = plan.at(step)
            embeds = [cond.embeds.repeat(batch, 1, 1)]
            pooled = [cond.pooled.repeat(batch, 1)] if sdxl else []
            if pipeline.do_classifier_free_guidance:
                embeds.insert(0, uncond.embeds.repeat(batch, 1, 1))
                pooled[:0] = [uncond.pooled.repeat(batch, 1)] if sdxl else []
            previous = callback_kwargs["prompt_embeds"]
            callback_kwargs["prompt_embeds"] = torch.cat(embeds).to(previous.device, previous.dtype)
            if sdxl:
                callback_kwargs["add_text_embeds"] = torch.cat(pooled).to(previous.device, previous.dtype)

        current = {"step": 0}

        def on_step_end(pipeline, step, timestep, callback_kwargs):
            current["step"] = step + 1
            job.set_progress(step + 1, request.steps)
            if self.options.live_previews_enable and preview_every > 0 and (step + 1) % preview_every == 0:
                job.set_preview(latent_preview(callback_kwargs["latents"][0], model.family))
            if job.should_stop:
                pipeline._interrupt = True   # diffusers skips the remaining steps; what we have is decoded
            elif step + 1 < request.steps and not plan.composable and plan.changes_at(step + 1):
                step_conditioning(pipeline, step + 1, callback_kwargs)
            return callback_kwargs

        with contextlib.ExitStack() as stack:
            if plan.composable:   # AND: the UNet answers with the weighted parts (they follow the steps themselves)
                stack.enter_context(composable_unet(
                    pipe.unet, lambda: (plan.parts_at(current["step"]), plan.at(current["step"])[1]),
                    guided=request.cfg_scale > 1))
                tensor_inputs = ["latents"]
            return pipe(**kwargs, callback_on_step_end=on_step_end,
                        callback_on_step_end_tensor_inputs=tensor_inputs).images

    def _decode(self, model: LoadedModel, latents: torch.Tensor) -> list[Image.Image]:
        vae = model.pipeline.vae
        with torch.inference_mode():
            scaled = latents.to(vae.dtype) / vae.config.scaling_factor
            if getattr(vae.config, "shift_factor", None):
                scaled = scaled + vae.config.shift_factor
            decoded = vae.decode(scaled).sample
            if self.manager.devices.nan_check and vae.dtype != torch.float32 and torch.isnan(decoded).any():
                log.warning("VAE produced NaNs in %s; decoding again in fp32", vae.dtype)
                vae.to(torch.float32)
                decoded = vae.decode(scaled.float()).sample
        return model.pipeline.image_processor.postprocess(decoded.float(), output_type="pil")

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
                  seed: int, subseed: int) -> str:
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
            "Clip skip": clip_skip if clip_skip > 1 and not model.family.startswith("sdxl") else None,
            "RNG": opts.randn_source if opts.randn_source != "GPU" else None,
            "Tiling": True if request.tiling else None,
            "Version": INFOTEXT_VERSION if opts.add_version_to_infotext else None,
        }
        return infotext.create_infotext(prepared.prompt, prepared.negative, params, job_params["extra"])

    def _pnginfo(self, text: str) -> str | None:
        return text if self.options.enable_pnginfo else None

    def _outdir(self, option: str):
        configured = self.options.get(option) or ""
        folder = self.paths.data / configured
        return folder.resolve()

    def _save(self, image: Image.Image, option: str, seed: int, text: str, *, grid: bool = False):
        opts = self.options
        save = images.save_grid if grid else images.save_image
        try:
            return save(image, self._outdir(option), seed=seed, infotext=self._pnginfo(text),
                        extension=opts.grid_format if grid else opts.samples_format,
                        save_to_dirs=opts.grid_save_to_dirs if grid else opts.save_to_dirs)
        except OSError as error:   # disk full, read-only folder...: nothing partial was left behind
            raise JobError(f"could not save the image: {error.strerror or error}", status=507) from None

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
            "denoising_strength": None, "extra_generation_params": {},
            "index_of_first_image": result.index_of_first_image, "infotexts": result.infotexts,
            "styles": list(request.styles), "warnings": result.warnings, "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": clip_skip,
            "is_using_inpainting_conditioning": model.spec.inpainting, "version": INFOTEXT_VERSION,
            "scheduler": request.scheduler,
        }

