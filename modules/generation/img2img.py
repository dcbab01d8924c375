"""img2img inputs: the user's images and mask → what a pass starts from, and the results pasted back.

The steps are A1111's (`StableDiffusionProcessingImg2Img.init` and `apply_overlay`): flatten transparency,
resize by the resize mode, blur/invert the mask, crop to the masked area for "Only masked", fill the masked
content, and after decoding paste the original back wherever the mask kept it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from modules import masking

MASKED_CONTENT = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
LATENT_UPSCALE = 3


@dataclass
class ImageInputs:
    images: list[Image.Image]          # one per init image, RGB, at the size the model sees
    mask: Image.Image | None           # "L" at that size, white = repaint; None = the whole image
    overlays: list[Image.Image | None]  # per init image: the original to paste over results (RGBA), or None
    region: tuple[int, int, int, int] | None   # "Only masked": where the processed crop goes back

    def overlay_for(self, index: int) -> Image.Image | None:
        return self.overlays[index % len(self.overlays)]


def _multiple_of_8(size: tuple[int, int]) -> tuple[int, int]:
    return max(8, size[0] // 8 * 8), max(8, size[1] // 8 * 8)


def prepare(request, *, background: str, upscale=None) -> ImageInputs:
    """`upscale(image, scale)`: the upscaler used when a resize enlarges the image (A1111 upscaler_for_img2img)."""
    width, height = request.width, request.height
    mask = None
    overlay_mask = None
    region = None
    if request.mask is not None:
        source = request.mask
        first_size = request.init_images[0].size
        if source.size != first_size:   # a mask drawn at another size: stretched onto the image
            source = source.resize(first_size, Image.NEAREST)
        mask = masking.prepare_mask(source, blur_x=request.mask_blur,
                                    blur_y=request.mask_blur, invert=bool(request.inpainting_mask_invert))
        if request.inpaint_full_res:
            overlay_mask = mask
            region = masking.crop_region(mask, request.inpaint_full_res_padding)
            if region is None:   # nothing painted: A1111 then inpaints nothing and returns the image as is
                mask = overlay_mask = None
            else:
                region = masking.expand_crop_region(region, width, height, mask.width, mask.height)
                mask = masking.resize_image(2, mask.crop(region), width, height)
        else:
            mask = overlay_mask = masking.resize_image(request.resize_mode, mask, width, height)

    images, overlays = [], []
    for original in request.init_images:
        image = masking.flatten(original, background)
        if region is None and request.resize_mode != LATENT_UPSCALE:
            image = masking.resize_image(request.resize_mode, image, width, height, upscale)
        elif request.resize_mode == LATENT_UPSCALE and region is None:
            # encoded at its own size (to a multiple of 8); the latents are resized to W×H afterwards
            size = _multiple_of_8(image.size)
            image = image.resize(size, Image.LANCZOS) if image.size != size else image
        if overlay_mask is None:
            overlays.append(None)
        else:   # the overlay matches the result: the model's size, or the original's for Only masked
            shown = image if image.size == overlay_mask.size else image.resize(overlay_mask.size, Image.LANCZOS)
            overlays.append(masking.overlay(shown, overlay_mask, region))
        if region is not None:
            image = masking.resize_image(2, image.crop(region), width, height, upscale)
        if mask is not None and request.inpainting_fill != 1:
            image = masking.fill(image, mask)
        images.append(image.convert("RGB"))
    return ImageInputs(images=images, mask=mask, overlays=overlays, region=region)


def fill_latents(latents: torch.Tensor, mask: Image.Image | None, fill: int, noise: torch.Tensor) -> torch.Tensor:
    """Masked content "latent noise" (the seed noise) and "latent nothing" (zeros), in the masked area."""
    if mask is None or fill not in (2, 3):
        return latents
    latent_mask = masking.latent_mask(mask, latents.shape[3], latents.shape[2]).to(latents.device, latents.dtype)
    replacement = noise.to(latents.device, latents.dtype) if fill == 2 else torch.zeros_like(latents)
    return latents * (1 - latent_mask) + replacement * latent_mask


def finish(result: Image.Image, inputs: ImageInputs, index: int) -> Image.Image:
    """The decoded result with the original pasted back where the mask kept it (and into place for Only masked)."""
    overlay = inputs.overlay_for(index)
    if overlay is None:
        return result
    return masking.apply_overlay(result, overlay, inputs.region)


def infotext_params(request) -> dict:
    """A1111's img2img infotext keys (extra_generation_params), in its order."""
    params: dict = {}
    if request.mask is None:
        return params
    if request.mask_blur > 0:
        params["Mask blur"] = request.mask_blur
    if request.inpainting_mask_invert:
        params["Mask mode"] = "Inpaint not masked"
    params["Masked content"] = MASKED_CONTENT[request.inpainting_fill]
    if request.inpaint_full_res:
        params["Inpaint area"] = "Only masked"
        params["Masked area padding"] = request.inpaint_full_res_padding
    return params


def encode_inputs(pipe, inputs: ImageInputs, *, inpainting: bool, should_stop) -> dict:
    """Each distinct init image encoded once per job (and its masked version for inpainting models)."""
    from modules.diffusion import sampling

    latents = [sampling.encode(pipe, [image], should_stop=should_stop) for image in inputs.images]
    masked = ([sampling.encode_masked(pipe, [image], inputs.mask, should_stop=should_stop) for image in inputs.images]
              if inpainting else None)
    return {"latents": latents, "masked": masked}


def add_image(step, request, inputs: ImageInputs, encoded: dict, first: int, batch_noise: torch.Tensor) -> None:
    """Make `step` (a sampling.Pass) an img2img/inpaint pass from the job's init images (cycled over the batch)."""
    from modules.postprocess.upscalers import upscale_latents

    count = batch_noise.shape[0]
    picks = [(first + i) % len(inputs.images) for i in range(count)]
    latents = torch.cat([encoded["latents"][i] for i in picks]).to(batch_noise.device)
    if latents.shape[2:] != batch_noise.shape[2:]:   # "Just resize (latent upscale)"
        latents = upscale_latents(latents, batch_noise.shape[2], batch_noise.shape[3], "Latent")
    step.init_latents = fill_latents(latents, inputs.mask, request.inpainting_fill, batch_noise)
    step.mask = inputs.mask
    if encoded["masked"] is not None:
        step.masked_image_latents = torch.cat([encoded["masked"][i] for i in picks]).to(batch_noise.device)
    step.strength = request.denoising_strength
