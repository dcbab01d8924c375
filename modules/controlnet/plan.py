"""From a request's ControlNet units to what each denoising pass needs, and the infotext they leave.

`ControlNet` bundles the three things a unit uses — the model files, the loaded-model cache and the
preprocessors — and is owned by the services like the other model folders. Per job, `prepare` checks each
enabled unit against the checkpoint, runs its preprocessor once and loads its model; each pass then asks the
prepared unit for a `PassControl` at its own size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from modules.controlnet.control import PassControl, hint_tensor, pixel_perfect_resolution, resize_map
from modules.controlnet.models import ControlNetCache, ControlNetLoadError, ControlNetRegistry
from modules.controlnet.preprocessors import PreprocessorError, Preprocessors
from modules.controlnet.units import ControlNetUnit, infotext_value
from modules.models.families import Family

# Maps of these preprocessors get soft weights in the hires pass, as the extension does (sharp edges
# at the upscaled size otherwise fight the upscaled image).
_HIRES_SOFT_MODULES = ("canny", "mlsd")


class ControlNetError(Exception):
    """A unit that cannot run; the message names the unit and the field."""


@dataclass
class PreparedUnit:
    unit: ControlNetUnit
    model: torch.nn.Module
    title: str
    detected_map: Image.Image
    processor_res: int | None                       # what the preprocessor ran at (None: it has no resolution)
    thresholds: tuple[float | None, float | None]   # what it used (None: it has no such slider)

    def for_pass(self, width: int, height: int, *, hires_pass: bool, hires_enabled: bool,
                 region: tuple[int, int, int, int] | None = None,
                 source_size: tuple[int, int] | None = None) -> PassControl | None:
        """The control for a pass of width×height; None when the unit's hires option skips this pass.
        `region`: "Only masked" inpainting, where the pass sees only that crop of the `source_size` image."""
        option = self.unit.hr_option
        if hires_enabled and (option == "Low res only" and hires_pass or option == "High res only" and not hires_pass):
            return None
        detected = self.detected_map
        if region is not None and source_size is not None:
            detected = detected.convert("RGB").resize(source_size, Image.LANCZOS).crop(region)
        image = resize_map(detected, self.unit.resize_mode, width, height)
        module = self.unit.module
        soft = self.unit.control_mode != 0 or (hires_pass and any(name in module for name in _HIRES_SOFT_MODULES))
        # Globally pooled models (shuffle) guide only the conditional half too, as the extension and diffusers do.
        cond_only = self.unit.control_mode == 2 or bool(getattr(self.model.config, "global_pool_conditions", False))
        return PassControl(model=self.model, hint=hint_tensor(image), weight=self.unit.weight,
                           start=self.unit.guidance_start, end=self.unit.guidance_end, soft=soft,
                           cond_only=cond_only)

    def infotext(self, hires: bool) -> str:
        return infotext_value(self.unit, model_title=self.title, processor_res=self.processor_res,
                              thresholds=self.thresholds, hires=hires)


@dataclass
class ControlNet:
    registry: ControlNetRegistry
    models: ControlNetCache
    preprocessors: Preprocessors

    def detect(self, unit: ControlNetUnit, image: Image.Image, width: int, height: int
               ) -> tuple[Image.Image, int | None, tuple[float | None, float | None]]:
        """Run the unit's preprocessor on `image` for a width×height target: (map, resolution, thresholds)."""
        preprocessor = self.preprocessors.find(unit.module)
        if preprocessor is None:
            raise ControlNetError(f"module: unknown preprocessor {unit.module!r}; "
                                  f"choose one of {self.preprocessors.names()}")
        resolution = None
        if preprocessor.resolution is not None:
            if unit.pixel_perfect:
                resolution = pixel_perfect_resolution(image.size, width, height, unit.resize_mode)
            elif unit.processor_res > 0:
                resolution = unit.processor_res
            else:
                resolution = int(preprocessor.resolution.value)
        thresholds = tuple(
            None if slider is None else (value if value != -1 else slider.value)
            for slider, value in ((preprocessor.threshold_a, unit.threshold_a),
                                  (preprocessor.threshold_b, unit.threshold_b)))
        try:
            detected = self.preprocessors.run(preprocessor.name, image.convert("RGB"), resolution or 512,
                                              thresholds[0], thresholds[1])
        except PreprocessorError as error:
            raise ControlNetError(f"module: {error}") from None
        return detected, resolution, thresholds

    def prepare(self, units: list[ControlNetUnit], checkpoint_family: Family, width: int, height: int,
                init_image: Image.Image | None) -> list[PreparedUnit]:
        """Every enabled unit checked, annotated and loaded; raises ControlNetError naming the unit."""
        prepared = []
        for index, unit in enumerate(units):
            if not unit.enabled:
                continue
            try:
                prepared.append(self._prepare_one(unit, checkpoint_family, width, height, init_image))
            except ControlNetError as error:
                raise ControlNetError(f"ControlNet unit {index}: {error}") from None
        return prepared

    def _prepare_one(self, unit: ControlNetUnit, checkpoint_family: Family, width: int, height: int,
                     init_image: Image.Image | None) -> PreparedUnit:
        info = self.registry.find(unit.model)
        if info is None:
            raise ControlNetError(f"model: unknown ControlNet {unit.model!r}; see /controlnet/model_list")
        try:
            family = self.registry.family(info)
        except ControlNetLoadError as error:
            raise ControlNetError(f"model: {error}") from None
        if family is not checkpoint_family:
            raise ControlNetError(f"model: the ControlNet model {info.title} is for {family.label}, the checkpoint is "
                                  f"{checkpoint_family.label}; pick a ControlNet for {checkpoint_family.label}")
        source = unit.image if unit.image is not None else init_image
        if source is None:
            raise ControlNetError("image: no control image; upload one (or use img2img, whose image is used)")
        detected, resolution, thresholds = self.detect(unit, source, width, height)
        try:
            model = self.models.get(info)
        except ControlNetLoadError as error:
            raise ControlNetError(f"model: {error}") from None
        return PreparedUnit(unit=unit, model=model, title=info.title, detected_map=detected,
                            processor_res=resolution, thresholds=thresholds)


def pass_controls(prepared: list[PreparedUnit], width: int, height: int, *, hires_pass: bool, hires_enabled: bool,
                  region: tuple[int, int, int, int] | None = None,
                  source_size: tuple[int, int] | None = None) -> list[PassControl]:
    """The controls of one pass (see `PreparedUnit.for_pass`), leaving out units its hires option skips."""
    controls = (unit.for_pass(width, height, hires_pass=hires_pass, hires_enabled=hires_enabled, region=region,
                              source_size=source_size) for unit in prepared)
    return [control for control in controls if control is not None]


def infotext_params(prepared: list[PreparedUnit], hires: bool) -> dict:
    """The extension's infotext keys: `ControlNet 0: "Module: canny, Model: ..., ..."`, numbered as it does,
    over the enabled units."""
    return {f"ControlNet {number}": unit.infotext(hires) for number, unit in enumerate(prepared)}
