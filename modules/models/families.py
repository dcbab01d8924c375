"""The model families, each one record of its constants and capabilities (as ComfyUI's supported_models.py).

A family is recognised by which keys a checkpoint has (`marker`); its text encoders' widths only confirm it. Code
asks a family what it needs (`family.xl`, `family.generates`, `family.native_size`, …) instead of comparing names,
so a new family is one more record here (and its bundled configs in configs/), not an edit of the generation core.
The `id` is what files, settings, LoRA and ControlNet detection and the API call it ("sd1", "sdxl", …).
"""
from __future__ import annotations

from dataclasses import dataclass

from modules.models.tokenizer import EOS_ID

UNET = "model.diffusion_model."


@dataclass(frozen=True)
class TextEncoder:
    """Where a checkpoint keeps one text encoder, and how the bundled config builds it."""

    prefix: str              # its keys in the checkpoint
    kind: str                # "clip_l" (OpenAI CLIP, transformers layout) or "open_clip"
    config_part: str         # the bundled config folder: "text_encoder" or "text_encoder_2"
    with_projection: bool = False   # OpenCLIP with its text projection (SDXL's pooled output)
    drop_last_layer: bool = False   # SD 2.x uses the penultimate OpenCLIP layer, so the last one is not built

    @property
    def pad_token(self) -> str:
        """What prompts are padded with: OpenAI's CLIP pads with end-of-text, OpenCLIP with "!" (token 0)."""
        return "<|endoftext|>" if self.kind == "clip_l" else "!"

    @property
    def pad_id(self) -> int:
        return EOS_ID if self.kind == "clip_l" else 0

    @property
    def token_embedding(self) -> str:
        if self.kind == "clip_l":
            return self.prefix + "text_model.embeddings.token_embedding.weight"
        return self.prefix + "token_embedding.weight"


@dataclass(frozen=True)
class Family:
    id: str
    label: str
    marker: tuple[str, ...]          # keys whose presence identifies the family (checked in FAMILIES' order)
    config: str                      # its bundled diffusers config folder (configs/<config>)
    text_encoder: TextEncoder | None            # diffusers' `text_encoder`
    text_encoder_2: TextEncoder | None = None   # diffusers' `text_encoder_2` (SDXL's OpenCLIP-G)
    xl: bool = False                 # SDXL conditioning: pooled text embeds and size/crop (or aesthetic) time ids
    generates: bool = True           # starts from noise; a refiner only refines
    clip_skip: bool = True           # A1111's Clip skip applies (ignored for SDXL, as A1111's default)
    native_size: int = 512           # the size it was trained at
    inpaint_config: str | None = None   # the config folder of its inpainting variant
    v_config: str | None = None      # the config folder of its v-prediction variant (SD 2.x 768-v)
    v_native_size: int | None = None    # the v-prediction variant's training size
    heads: int | None = None         # a fixed number of attention heads (SD 1.x); else 64 channels per head
    time_ids: int = 6                # SDXL's time ids: size, crop and target size; the refiner's: 5
    controlnet_config: str | None = None   # the bundled config its ControlNets are built from; None: none fit
    real_context_width: int | None = None  # the text features' width in the released models (confirms files)

    @property
    def encoders(self) -> tuple[TextEncoder, ...]:
        return tuple(encoder for encoder in (self.text_encoder, self.text_encoder_2) if encoder is not None)

    @property
    def pooled_encoder(self) -> TextEncoder | None:
        """The encoder whose projection is the pooled text embedding (SDXL)."""
        return self.text_encoder_2 if self.xl else None

    def config_variant(self, *, inpainting: bool, v_prediction: bool) -> str:
        """The bundled diffusers config folder (configs/<variant>) for this family's model."""
        if inpainting and self.inpaint_config:
            return self.inpaint_config
        if v_prediction and self.v_config:
            return self.v_config
        return self.config

    def native_size_for(self, v_prediction: bool) -> int:
        return self.v_native_size if v_prediction and self.v_native_size else self.native_size

    def pipeline_class(self, *, inpainting: bool):
        """The diffusers text-to-image pipeline class (the inpaint one for inpainting models)."""
        import diffusers

        if not self.generates:
            return diffusers.StableDiffusionXLImg2ImgPipeline
        if self.xl:
            return diffusers.StableDiffusionXLInpaintPipeline if inpainting else diffusers.StableDiffusionXLPipeline
        return diffusers.StableDiffusionInpaintPipeline if inpainting else diffusers.StableDiffusionPipeline


SD1 = Family(
    "sd1", "SD 1.x", marker=("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",),
    config="sd15", inpaint_config="sd15_inpaint",
    text_encoder=TextEncoder("cond_stage_model.transformer.", "clip_l", "text_encoder"),
    heads=8, controlnet_config="sd15", real_context_width=768)
SD2 = Family(
    "sd2", "SD 2.x", marker=("cond_stage_model.model.token_embedding.weight",),
    config="sd2_512", inpaint_config="sd2_inpaint", v_config="sd2_768_v", v_native_size=768,
    text_encoder=TextEncoder("cond_stage_model.model.", "open_clip", "text_encoder", drop_last_layer=True),
    controlnet_config="sd2_768_v", real_context_width=1024)
SDXL = Family(
    "sdxl", "SDXL", marker=("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                            "conditioner.embedders.1.model.token_embedding.weight"),
    config="sdxl_base", inpaint_config="sdxl_inpaint",
    text_encoder=TextEncoder("conditioner.embedders.0.transformer.", "clip_l", "text_encoder"),
    text_encoder_2=TextEncoder("conditioner.embedders.1.model.", "open_clip", "text_encoder_2",
                               with_projection=True),
    xl=True, clip_skip=False, native_size=1024, controlnet_config="sdxl_base", real_context_width=2048)
SDXL_REFINER = Family(
    "sdxl_refiner", "SDXL refiner", marker=("conditioner.embedders.0.model.token_embedding.weight",),
    config="sdxl_refiner", text_encoder=None,
    text_encoder_2=TextEncoder("conditioner.embedders.0.model.", "open_clip", "text_encoder_2",
                               with_projection=True),
    xl=True, generates=False, clip_skip=False, native_size=1024, time_ids=5)

FAMILIES: tuple[Family, ...] = (SDXL, SDXL_REFINER, SD2, SD1)   # the order they are tried in
BY_ID = {family.id: family for family in FAMILIES}

def by_id(family_id: str) -> Family:
    return BY_ID[family_id]


def by_real_context_width(width: int | None) -> Family | None:
    """The family whose released models' text features are this wide (a confirmation, never the first clue)."""
    return next((family for family in FAMILIES if width and family.real_context_width == width), None)


def of_keys(keys) -> Family | None:
    """The first family whose marker keys are all there."""
    return next((family for family in FAMILIES if all(key in keys for key in family.marker)), None)
