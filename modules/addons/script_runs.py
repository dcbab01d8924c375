"""A request from the UI or the API whose tab has scripts taking part: its `p`, the chosen script's run() or
process_images(p), and the GenerationResult the job returns."""
from __future__ import annotations

import copy
import logging

from modules import sd_models
from modules.generation.request import OVERRIDE_FIELDS
from modules.jobs import Job, JobError, ScriptFailed
from modules.processing import (Processed, StableDiffusionProcessing, StableDiffusionProcessingImg2Img,
                                StableDiffusionProcessingTxt2Img, request_fields, process_images)
from modules.scripts import ScriptRunner

log = logging.getLogger(__name__)


def processing_for(request, generator, job: Job, runner: ScriptRunner | None,
                   script_args: list | None = None) -> StableDiffusionProcessing:
    """A `p` for a request about to run in `job`."""
    cls = StableDiffusionProcessingImg2Img if request.init_images else StableDiffusionProcessingTxt2Img
    p = cls(**{name: copy.copy(getattr(request, name)) for name in request_fields()})
    for key, field_name in OVERRIDE_FIELDS.items():
        value = getattr(request, field_name)
        if value is not None:
            p.override_settings[key] = value
            setattr(p, field_name, None)
    p.override_settings.update(request.option_overrides)
    p.option_overrides = {}
    p.do_not_save_samples, p.do_not_save_grid = not request.save_images, not request.save_grid
    p.save_images = p.save_grid = True
    p.scripts, p.script_args = runner, list(script_args or [])
    p._generator, p._job = generator, job
    # A1111's output folders for what scripts save themselves (images.save_image(..., p.outpath_samples, ...)),
    # absolute: a script may also write there itself, which would resolve a relative folder against its cwd
    options, tab = generator.options, "img2img" if request.init_images else "txt2img"
    samples = options.outdir_samples or getattr(options, f"outdir_{tab}_samples")
    grids = options.outdir_grids or getattr(options, f"outdir_{tab}_grids")
    p.outpath_samples, p.outpath_grids = str(generator.paths.data / samples), str(generator.paths.data / grids)
    return p


def run_with_scripts(generator, request, job: Job, runner: ScriptRunner):
    """A request from the UI or API whose tab has scripts: set up `p`, then the dropdown script's run() or
    process_images(p); the GenerationResult the job returns."""
    selected = runner.find_selectable(request.selected_script) if request.selected_script else None
    given = request.extension_scripts
    args_by_name = {script.name: runner.args_for(script, given.get(script.name)) for script in runner.scripts}
    p = processing_for(request, generator, job, runner, runner.flat_args(selected, args_by_name))
    p.sd_model = sd_models.WebuiSdModel(generator.load(request.checkpoint, remember=False))   # read from setup() on
    runner.setup(p)
    processed = None
    if selected is not None:
        try:
            processed = runner.run(p, *p.script_args)
        except JobError:
            raise
        except Exception as error:   # the script's bug: say whose, keep the traceback in the log
            log.exception("script %s failed", selected.title())
            raise ScriptFailed(f"script {selected.title()!r} failed: {type(error).__name__}: {error}") from None
        if processed is not None and not isinstance(processed, Processed):
            raise ScriptFailed(f"script {selected.title()!r} returned {type(processed).__name__}, not Processed")
    if processed is None:
        processed = process_images(p)
    return processed.to_result(request)
