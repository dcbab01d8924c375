"""One ControlNet unit of a generation request: which image guides it, through which preprocessor and model.

Field names and enum labels are the sd-webui-controlnet extension's (`ControlNetUnit`), so the UI, the API
and pasted infotext all build the same object; the API layer only maps the extension's legacy aliases.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from modules import images

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
HIRES_OPTIONS = ("Both", "Low res only", "High res only")
MAX_UNITS = 10


def _index_of(value: Any, labels: tuple[str, ...], what: str, legacy: dict[str, int] | None = None) -> int:
    """An enum given as its label, an old label, or its index (as the extension accepts them)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be one of {list(labels)} or its index")
    if isinstance(value, int):
        if 0 <= value < len(labels):
            return value
        raise ValueError(f"{what} index {value} is out of range 0..{len(labels) - 1}")
    if isinstance(value, str):
        for index, label in enumerate(labels):
            if value.strip().lower() == label.lower():
                return index
        for prefix, index in (legacy or {}).items():
            if value.startswith(prefix):
                return index
    raise ValueError(f"{what} must be one of {list(labels)} or its index; got {value!r}")


class ControlNetUnit(BaseModel):
    """What one unit does. `image` None in img2img means "use the img2img image"."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = True
    module: str = "none"                 # the preprocessor
    model: str = "None"                  # a ControlNet title, name or file name
    weight: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    image: Any = None                    # PIL image, decoded at the edge
    resize_mode: int = 1                 # index into RESIZE_MODES ("Crop and Resize")
    processor_res: int = Field(-1, ge=-1, le=4096)   # -1: the preprocessor's default
    threshold_a: float = Field(-1.0, allow_inf_nan=False)   # -1: the preprocessor's default
    threshold_b: float = Field(-1.0, allow_inf_nan=False)
    guidance_start: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    guidance_end: float = Field(1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    pixel_perfect: bool = False
    control_mode: int = 0                # index into CONTROL_MODES
    hr_option: str = "Both"              # which hires-fix passes the unit guides
    save_detected_map: bool = True
    low_vram: bool = False               # accepted for the extension's clients; memory is managed per device

    @field_validator("resize_mode", mode="before")
    @classmethod
    def _resize_mode(cls, value: Any) -> int:
        if value == 3:   # "Just Resize (Latent upscale)" is plain Just Resize for a control image
            return 0
        return _index_of(value, RESIZE_MODES, "resize_mode",
                         {"Just Resize": 0, "Inner Fit": 1, "Outer Fit": 2, "Envelope": 2})

    @field_validator("control_mode", mode="before")
    @classmethod
    def _control_mode(cls, value: Any) -> int:
        return _index_of(value, CONTROL_MODES, "control_mode")

    @field_validator("hr_option", mode="before")
    @classmethod
    def _hr_option(cls, value: Any) -> str:
        return HIRES_OPTIONS[_index_of(value, HIRES_OPTIONS, "hr_option")]

    @field_validator("module")
    @classmethod
    def _known_module(cls, value: str, info: ValidationInfo) -> str:
        controlnet = (info.context or {}).get("controlnet")
        if controlnet is None:
            return value
        found = controlnet.preprocessors.find(value)
        if found is None:
            raise ValueError(f"unknown preprocessor {value!r}; see /controlnet/module_list")
        return found.name

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str, info: ValidationInfo) -> str:
        if not value or value == "None":
            return "None"
        controlnet = (info.context or {}).get("controlnet")
        if controlnet is not None and controlnet.registry.find(value) is None:
            raise ValueError(f"unknown ControlNet model {value!r}; see /controlnet/model_list")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: Any) -> Any:
        return None if value is None else images.check_user_image(value, what="image")

    @model_validator(mode="after")
    def _consistent(self) -> "ControlNetUnit":
        if self.guidance_end < self.guidance_start:
            raise ValueError("guidance_end must not be below guidance_start")
        if self.enabled and self.model == "None":
            raise ValueError("model: an enabled unit needs a ControlNet model (pick one in its Model list; "
                             "/controlnet/model_list over the API)")
        return self

    @property
    def resize_mode_label(self) -> str:
        return RESIZE_MODES[self.resize_mode]

    @property
    def control_mode_label(self) -> str:
        return CONTROL_MODES[self.control_mode]


# ------------------------------------------------------------------ infotext: ControlNet N: "Key: value, ..."

_INFOTEXT_KEYS = (   # (the extension's infotext key, unit field)
    ("Module", "module"), ("Model", "model"), ("Weight", "weight"), ("Resize Mode", "resize_mode"),
    ("Processor Res", "processor_res"), ("Threshold A", "threshold_a"), ("Threshold B", "threshold_b"),
    ("Guidance Start", "guidance_start"), ("Guidance End", "guidance_end"), ("Pixel Perfect", "pixel_perfect"),
    ("Control Mode", "control_mode"), ("Hr Option", "hr_option"),
)


def infotext_value(unit: ControlNetUnit, *, model_title: str, processor_res: int | None,
                   thresholds: tuple[float | None, float | None], hires: bool) -> str:
    """The extension's value for one unit; sliders the preprocessor does not have are left out, as it does."""
    values = {
        "Module": unit.module, "Model": model_title, "Weight": unit.weight, "Resize Mode": unit.resize_mode_label,
        "Processor Res": processor_res, "Threshold A": thresholds[0], "Threshold B": thresholds[1],
        "Guidance Start": unit.guidance_start, "Guidance End": unit.guidance_end,
        "Pixel Perfect": unit.pixel_perfect, "Control Mode": unit.control_mode_label,
        "Hr Option": unit.hr_option if hires else None,
    }
    # Its parser splits on ", " and ": ", so a name holding them would corrupt the line: they become spaces.
    return ", ".join(f"{key}: {str(value).replace(',', ' ').replace(':', ' ')}"
                     for key, value in values.items() if value is not None)


def parse_infotext_value(text: str) -> dict:
    """One `ControlNet N` value → unit fields (no image). Keys in the extension's old snake_case form work too."""
    by_key = {key.lower(): field for key, field in _INFOTEXT_KEYS}
    by_key.update({field: field for _, field in _INFOTEXT_KEYS})
    fields: dict[str, Any] = {}
    for item in text.split(", "):
        key, separator, value = item.partition(": ")
        field = by_key.get(key.strip().lower().replace(" ", "_")) or by_key.get(key.strip().lower())
        if not separator or field is None:
            continue
        value = value.strip()
        if field in ("weight", "threshold_a", "threshold_b", "guidance_start", "guidance_end"):
            fields[field] = float(value)
        elif field == "processor_res":
            fields[field] = int(float(value))
        elif field == "pixel_perfect":
            fields[field] = value.lower() == "true"
        else:
            fields[field] = value
    return fields
