"""The typed requests of the Train tab and its API routes, with A1111's field names and defaults (its
`create_embedding`, `train_embedding`, `create_hypernetwork` and `train_hypernetwork` parameters, which
`/sdapi/v1/create/embedding`, `/train/embedding`, `/create/hypernetwork` and `/train/hypernetwork` take as the
request body), validated before any work starts: a bad field is an error naming it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modules.networks.hypernetwork import MAX_LAYERS
from modules.training.embedding_files import MAX_VECTORS_PER_TOKEN, file_name
from modules.training.hypernetwork_files import WEIGHT_INITIALIZATIONS, Structure, offered_activations
from modules.training.hypernetwork_files import file_name as hypernetwork_file_name
from modules.training.learn_schedule import parse_schedule

MAX_TRAINING_STEPS = 100_000   # A1111's slider
MAX_TRAINING_SIDE = 2048
MAX_BATCH_SIZE = 64
MAX_HYPERNETWORK_WIDTH = 8192


class CreateEmbeddingRequest(BaseModel):
    """Train → Create embedding (A1111's `create_embedding(name, num_vectors_per_token, overwrite_old,
    init_text)`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    num_vectors_per_token: int = Field(1, ge=1, le=MAX_VECTORS_PER_TOKEN)
    overwrite_old: bool = False
    init_text: str = Field("*", max_length=10_000)

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name: str) -> str:
        check_name_length(file_name(name))   # raises with the reason
        return name


class CreateHypernetworkRequest(BaseModel):
    """Train → Create hypernetwork (A1111's `create_hypernetwork(name, enable_sizes, overwrite_old, layer_structure,
    activation_func, weight_init, add_layer_norm, use_dropout, dropout_structure)`, its UI's defaults). The two
    structures are lists or A1111's comma-separated text; `dropout_structure` counts only with `use_dropout`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    enable_sizes: list[int] = Field(default_factory=lambda: [768, 320, 640, 1280], min_length=1, max_length=16)
    overwrite_old: bool = False
    layer_structure: list[float] | str = Field("1, 2, 1", validate_default=True)
    activation_func: str = "linear"
    weight_init: Literal[WEIGHT_INITIALIZATIONS] = "Normal"
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: list[float] | str | None = "0, 0, 0"

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name: str) -> str:
        check_name_length(hypernetwork_file_name(name))   # raises with the reason
        return name

    @field_validator("enable_sizes")
    @classmethod
    def _widths(cls, sizes: list[int]) -> list[int]:
        if any(size < 1 or size > MAX_HYPERNETWORK_WIDTH for size in sizes) or len(set(sizes)) != len(sizes):
            raise ValueError(f"{sizes} must be different context widths from 1 to {MAX_HYPERNETWORK_WIDTH}")
        return sizes

    @field_validator("layer_structure")
    @classmethod
    def _layer_structure(cls, value) -> list[float]:
        sizes = _numbers(value)
        if not 2 <= len(sizes) <= MAX_LAYERS or any(size <= 0 for size in sizes):
            raise ValueError(f"{value!r} must be 2 to {MAX_LAYERS} positive numbers")
        if sizes[0] != 1 or sizes[-1] != 1:
            raise ValueError(f"{value!r} must start and end with 1 (A1111: 'Multiplier Sequence should start "
                             "and end with size 1')")
        return sizes

    @field_validator("activation_func")
    @classmethod
    def _activation(cls, name: str) -> str:
        offered = offered_activations()
        if name not in offered:
            raise ValueError(f"{name!r} is not an activation function here: one of {', '.join(offered)}")
        return name

    @model_validator(mode="after")
    def _structures_fit(self):
        for width in self.enable_sizes:
            if any(int(width * size) < 1 for size in self.layer_structure):
                raise ValueError(f"layer_structure {self.layer_structure} gives an empty layer for width {width}")
        if not self.use_dropout or self.dropout_structure in (None, ""):
            self.dropout_structure = [0.0] * len(self.layer_structure)   # A1111: no dropout
            return self
        try:
            dropout = _numbers(self.dropout_structure)
        except ValueError as error:
            raise ValueError(f"dropout_structure: {error}") from None
        if (len(dropout) != len(self.layer_structure) or dropout[0] != 0 or dropout[-1] != 0
                or any(not 0 <= value < 1 for value in dropout)):
            raise ValueError(f"dropout_structure {self.dropout_structure!r} must have one number per layer_structure "
                             "entry, each from 0 to below 1, the first and last 0")
        self.dropout_structure = dropout
        return self

    def structure(self) -> Structure:
        return Structure(layer_structure=tuple(self.layer_structure), activation_func=self.activation_func,
                         add_layer_norm=self.add_layer_norm, dropout_structure=tuple(self.dropout_structure))


def _numbers(value) -> list[float]:
    """A list of numbers, or A1111's comma-separated text of them."""
    if isinstance(value, str):
        try:
            return [float(part.strip()) for part in value.split(",")]
        except ValueError:
            raise ValueError(f"{value!r} is not a comma-separated list of numbers") from None
    return [float(part) for part in value]


MAX_NAME_BYTES = 200   # a file name holds 255 bytes; the suffixes a training adds (".safetensors.state") need room


def check_name_length(name: str) -> None:
    """A name that makes a file: at most MAX_NAME_BYTES in UTF-8 (200 characters of "ü" are 400 bytes)."""
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ValueError(f"the name is {size} bytes in UTF-8; at most {MAX_NAME_BYTES} fit in a file name")


def plain_file_name(name: str) -> str:
    """A name that becomes a file of its own in a models folder: no path parts or characters file systems refuse,
    no leading dot (a hidden file), at most MAX_NAME_BYTES."""
    if name != name.strip() or any(c in name for c in '/\\:*?"<>|\0') or name.startswith("."):
        raise ValueError(f"{name!r} cannot be a file name: no slashes, leading dot or :*?\"<>|")
    check_name_length(name)
    return name


def schedule_text(value):
    """A learning-rate (or clip-value) schedule given as a plain number, as clients send `0.005`: its text form."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return value


class _TrainingRequest(BaseModel):
    """The fields A1111's `train_embedding` and `train_hypernetwork` share, with its UI's defaults; the preview_*
    fields are used with `preview_from_txt2img` (see `previews.PreviewSettings`)."""

    model_config = ConfigDict(extra="forbid")

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
    # training interrupted and resumed ends with the same weights as one run straight through.
    seed: int = -1

    @field_validator("learn_rate", "clip_grad_value", mode="before", check_fields=False)
    @classmethod
    def _number_as_text(cls, value):
        return schedule_text(value)

    @field_validator("learn_rate", "clip_grad_value", check_fields=False)
    @classmethod
    def _schedule(cls, text: str) -> str:
        parse_schedule(text, MAX_TRAINING_STEPS)   # raises ScheduleError (a ValueError) naming the text
        return text

    @field_validator("template_filename", check_fields=False)
    @classmethod
    def _plain_file_name(cls, name: str) -> str:
        if not name or name != name.strip() or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"{name!r} is not the name of a file in the templates folder")
        return name


class TrainEmbeddingRequest(_TrainingRequest):
    """Train → Train (an embedding), A1111's `train_embedding` parameters."""

    embedding_name: str = Field(min_length=1, max_length=200)
    learn_rate: str = "0.005"
    save_embedding_every: int = Field(500, ge=0)
    template_filename: str = "style_filewords.txt"
    save_image_with_stored_embedding: bool = True


class TrainHypernetworkRequest(_TrainingRequest):
    """Train → Train (a hypernetwork), A1111's `train_hypernetwork` parameters."""

    hypernetwork_name: str = Field(min_length=1, max_length=200)
    learn_rate: str = "0.00001"
    save_hypernetwork_every: int = Field(500, ge=0)
    template_filename: str = "hypernetwork.txt"
