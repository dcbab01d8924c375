"""The typed requests of the Train tab and its API routes, with A1111's field names and defaults (its
`create_embedding` and `train_embedding` parameters, which `/sdapi/v1/create/embedding` and `/train/embedding`
take as the request body), validated before any work starts: a bad field is an error naming it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modules.training.embedding_files import MAX_VECTORS_PER_TOKEN, file_name
from modules.training.learn_schedule import parse_schedule

MAX_TRAINING_STEPS = 100_000   # A1111's slider
MAX_TRAINING_SIDE = 2048
MAX_BATCH_SIZE = 64


class CreateEmbeddingRequest(BaseModel):
    """Train → Create embedding (A1111's `create_embedding(name, num_vectors_per_token, overwrite_old, init_text)`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    num_vectors_per_token: int = Field(1, ge=1, le=MAX_VECTORS_PER_TOKEN)
    overwrite_old: bool = False
    init_text: str = Field("*", max_length=10_000)

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name: str) -> str:
        file_name(name)   # raises with the reason
        return name


class TrainEmbeddingRequest(BaseModel):
    """Train → Train (an embedding), A1111's `train_embedding` parameters and its UI's defaults. The preview
    fields are accepted for A1111's clients; previews during training are not made yet."""

    model_config = ConfigDict(extra="forbid")

    embedding_name: str = Field(min_length=1, max_length=200)
    learn_rate: str = "0.005"
    batch_size: int = Field(1, ge=1, le=MAX_BATCH_SIZE)
    gradient_step: int = Field(1, ge=1, le=1000)
    data_root: str = Field(min_length=1)
    log_directory: str = "textual_inversion"
    training_width: int = Field(512, ge=8, le=MAX_TRAINING_SIDE, multiple_of=8)
    training_height: int = Field(512, ge=8, le=MAX_TRAINING_SIDE, multiple_of=8)
    varsize: bool = False
    steps: int = Field(100_000, ge=1, le=MAX_TRAINING_STEPS)
    clip_grad_mode: Literal["disabled", "value", "norm"] = "disabled"
    clip_grad_value: str = "0.1"
    shuffle_tags: bool = False
    tag_drop_out: float = Field(0.0, ge=0.0, le=1.0)
    latent_sampling_method: Literal["once", "deterministic", "random"] = "once"
    use_weight: bool = False
    create_image_every: int = Field(500, ge=0)
    save_embedding_every: int = Field(500, ge=0)
    template_filename: str = "style_filewords.txt"
    save_image_with_stored_embedding: bool = True
    preview_from_txt2img: bool = False
    preview_prompt: str = ""
    preview_negative_prompt: str = ""
    preview_steps: int = 20
    preview_sampler_name: str = "Euler a"
    preview_cfg_scale: float = 7.0
    preview_seed: int = -1
    preview_width: int = 512
    preview_height: int = 512
    # Not A1111's: the seed of the data order, timesteps and noise (-1: random, kept in the resume state), so a
    # training interrupted and resumed ends with the same embedding as one run straight through.
    seed: int = -1

    @field_validator("learn_rate", "clip_grad_value")
    @classmethod
    def _schedule(cls, text: str) -> str:
        parse_schedule(text, MAX_TRAINING_STEPS)   # raises ScheduleError (a ValueError) naming the text
        return text

    @field_validator("template_filename")
    @classmethod
    def _plain_file_name(cls, name: str) -> str:
        if not name or name != name.strip() or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"{name!r} is not the name of a file in the templates folder")
        return name
