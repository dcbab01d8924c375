"""The request of a LoRA training (Train → LoRA, and DreamBooth-LoRA with an instance prompt and class images),
validated before any work starts: a bad field is an error naming it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modules.training.requests import MAX_BATCH_SIZE, MAX_TRAINING_SIDE, MAX_TRAINING_STEPS, plain_file_name

MAX_RANK = 256
MAX_CLASS_IMAGES = 1000   # class images made for prior preservation (diffusers' num_class_images)
# diffusers.optimization.get_scheduler's names that need no extra arguments
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


class TrainLoraRequest(BaseModel):
    """A LoRA training on the loaded SD 1.x, 2.x or SDXL checkpoint; the file is `<Lora folder>/<name>.safetensors`.

    Prompts: each image's is `instance_prompt` and its caption (`<image>.txt`, else its file name) joined by ", ",
    as `use_captions` says; `caption_dropout` replaces the whole prompt by "" with that probability.
    DreamBooth prior preservation: `class_data_root` holds images of the class, trained with `class_prompt` beside
    the instance images, their loss weighted by `prior_loss_weight`. With `num_class_images` N, a class folder holding
    fewer than N images is first topped up to N with images generated from `class_prompt` on the checkpoint
    (`class_images`); 0 uses what the folder holds."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    data_root: str = Field(min_length=1)
    instance_prompt: str = Field("", max_length=10_000)
    use_captions: bool = True
    caption_dropout: float = Field(0.0, ge=0.0, le=1.0)
    class_data_root: str = ""
    class_prompt: str = Field("", max_length=10_000)
    prior_loss_weight: float = Field(1.0, ge=0.0, le=100.0)
    num_class_images: int = Field(0, ge=0, le=MAX_CLASS_IMAGES)   # 0: the class folder's images as they are

    rank: int = Field(16, ge=1, le=MAX_RANK)
    alpha: float | None = Field(None, ge=0.0, le=10_000.0)   # None or 0: the rank (a scale of 1)
    target: Literal["attention", "all_linear"] = "attention"
    train_text_encoder: bool = False

    optimizer: Literal["AdamW", "AdamW8bit"] = "AdamW"
    unet_lr: float = Field(1e-4, gt=0.0, le=1.0)
    text_encoder_lr: float = Field(5e-5, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-2, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, ge=0.0)   # 0: no clipping
    lr_scheduler: Literal[LR_SCHEDULERS] = "constant"
    lr_warmup_steps: int = Field(0, ge=0, le=MAX_TRAINING_STEPS)

    steps: int = Field(1000, ge=1, le=MAX_TRAINING_STEPS)
    batch_size: int = Field(1, ge=1, le=MAX_BATCH_SIZE)
    gradient_accumulation: int = Field(1, ge=1, le=1000)
    resolution: int = Field(512, ge=64, le=MAX_TRAINING_SIDE, multiple_of=8)
    bucketing: bool = False
    min_snr_gamma: float = Field(0.0, ge=0.0, le=100.0)   # 0: off (kohya's usual value is 5)
    noise_offset: float = Field(0.0, ge=0.0, le=1.0)
    save_every: int = Field(0, ge=0)                       # also a file <name>-<step>.safetensors every N steps
    preview_every: int = Field(0, ge=0)                    # a preview image every N steps (0: none)
    preview_prompt: str = Field("", max_length=10_000)     # "": the first image's training prompt
    save_precision: Literal["fp16", "bf16", "float"] = "fp16"
    seed: int = -1                                         # -1: random (kept in the resume state)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # autocast; pays off on CUDA
    gradient_checkpointing: bool = False                   # less memory, more time per step
    overwrite: bool = False                                # start afresh even where a LoRA of this name was trained

    @field_validator("name")
    @classmethod
    def _plain_file_name(cls, name: str) -> str:
        return plain_file_name(name)

    @model_validator(mode="after")
    def _class_images_need_a_prompt(self) -> TrainLoraRequest:
        if self.num_class_images and not self.class_data_root.strip():
            raise ValueError("num_class_images needs class_data_root: the folder the class images are generated into")
        if self.class_data_root.strip() and not self.class_prompt.strip():
            raise ValueError("class_prompt is needed with class_data_root (prior preservation)")
        return self

    @property
    def network_alpha(self) -> float:
        return float(self.alpha or self.rank)
