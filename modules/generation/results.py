"""What a generation returns: the images with their infotexts, and A1111's `info` JSON."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from modules.diffusion import samplers
from modules.networks import lora, textual_inversion, vae
from modules.output import infotext
from modules.postprocess import face_restoration
from modules.version import INFOTEXT_VERSION

if TYPE_CHECKING:
    from modules.generation.context import JobContext


@dataclass
class GenerationResult:
    images: list[Image.Image]           # grid first when one was made (A1111 return_grid)
    infotexts: list[str]                # one per image in `images`
    seeds: list[int]
    subseeds: list[int]
    request: Any                        # the GenerationRequest
    prompts: list[str] = field(default_factory=list)            # each image's (styles applied), grid not counted
    negative_prompts: list[str] = field(default_factory=list)
    index_of_first_image: int = 0
    saved: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # add-ons that could not be used, said before sampling
    info: dict = field(default_factory=dict)
    detected_maps: list[Image.Image] = field(default_factory=list)   # ControlNet annotations, shown after images

    def info_json(self) -> str:
        return json.dumps(self.info, ensure_ascii=False, default=str)   # scripts' values may be any object


def job_params(ctx: JobContext, used_loras: list, vae_info) -> dict:
    """Infotext values that are the same for every image of the job."""
    settings = ctx.settings
    return {
        "vae": vae.infotext_params(vae_info, add_hash=settings.add_vae_hash_to_info,
                                   add_name=settings.add_vae_name_to_info),
        "extra": {
            "Lora hashes": lora.infotext_hashes(used_loras) if used_loras else None,
            "TI hashes": (textual_inversion.ti_hashes(ctx.encoder.used_embeddings.values())
                          if ctx.encoder.used_embeddings else None),
            "Emphasis": settings.emphasis if settings.emphasis != "Original" else None,
        },
    }


def image_infotext(ctx: JobContext, prepared, params: dict, seed: int, subseed: int, extra: dict) -> str:
    """One image's A1111 infotext (`prepared`: its prompt)."""
    request, settings, model = ctx.request, ctx.settings, ctx.model
    variation = request.subseed_strength > 0
    clip_skip = ctx.clip_skip
    values = {
        "Steps": request.steps,
        "Sampler": request.sampler_name,
        # A1111 writes the chosen schedule, replaced by the one its sampler really used when they differ.
        "Schedule type": samplers.infotext_schedule(request.sampler_name, request.scheduler) or request.scheduler,
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Face restoration": face_restoration.model_for(request, settings),
        "Size": f"{request.width}x{request.height}",
        "Model hash": model.info.shorthash if settings.add_model_hash_to_info else None,
        "Model": model.info.stem if settings.add_model_name_to_info else None,
        **params["vae"],
        "Variation seed": subseed if variation else None,
        "Variation seed strength": request.subseed_strength if variation else None,
        "Seed resize from": (f"{request.seed_resize_from_w}x{request.seed_resize_from_h}"
                             if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0 else None),
        "Denoising strength": request.denoising_strength if ctx.image_mode or ctx.hires is not None else None,
        "Clip skip": clip_skip if clip_skip > 1 and model.family.clip_skip else None,
        "RNG": settings.randn_source if settings.randn_source != "GPU" else None,
        "Tiling": True if request.tiling else None,
        "Version": INFOTEXT_VERSION if settings.add_version_to_infotext else None,
    }
    return infotext.create_infotext(prepared.prompt, prepared.negative, values,
                                    {**extra, **params["extra"]})


def info_dict(ctx: JobContext, vae_info, result: GenerationResult, extra_params: dict) -> dict:
    """A1111's `Processed.js()`: what API clients read from the `info` JSON string."""
    request, model, prepared = ctx.request, ctx.model, ctx.prepared
    count = len(result.seeds)
    restorer = face_restoration.model_for(request, ctx.settings)
    return {
        "prompt": prepared.prompt, "all_prompts": result.prompts or [prepared.prompt] * count,
        "negative_prompt": prepared.negative,
        "all_negative_prompts": result.negative_prompts or [prepared.negative] * count,
        "seed": result.seeds[0] if result.seeds else -1, "all_seeds": result.seeds,
        "subseed": result.subseeds[0] if result.subseeds else -1, "all_subseeds": result.subseeds,
        "subseed_strength": request.subseed_strength, "width": request.width, "height": request.height,
        "sampler_name": request.sampler_name, "cfg_scale": request.cfg_scale, "steps": request.steps,
        "batch_size": request.batch_size, "restore_faces": restorer is not None, "face_restoration_model": restorer,
        "sd_model_name": model.info.stem, "sd_model_hash": model.info.shorthash,
        "sd_vae_name": vae_info.stem if vae_info else None,
        "sd_vae_hash": vae_info.shorthash() if vae_info else None,
        "seed_resize_from_w": request.seed_resize_from_w, "seed_resize_from_h": request.seed_resize_from_h,
        "denoising_strength": request.denoising_strength if request.init_images or request.enable_hr else None,
        "extra_generation_params": {key: value for key, value in extra_params.items() if value is not None},
        "index_of_first_image": result.index_of_first_image, "infotexts": result.infotexts,
        "styles": list(request.styles), "warnings": result.warnings,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": ctx.clip_skip,
        "is_using_inpainting_conditioning": model.spec.inpainting, "version": INFOTEXT_VERSION,
        "scheduler": request.scheduler,
    }
