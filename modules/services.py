"""The backend's objects, built once from the flags and passed to the API and the UI.

Each piece of state has one owner here: options, the checkpoint registry, the model manager and the
job queue. Nothing in the project reaches for a global instead.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from modules import devices, extra_networks, images, paths as paths_module, sd_models
from modules.diffusion import compilation
from modules.output import leftovers
from modules.cmd_args import parse_args
from modules.jobs import Job, JobError, JobQueue, StorageFull, Submitter
from modules.controlnet.models import ControlNetCache, ControlNetRegistry
from modules.controlnet.plan import ControlNet
from modules.postprocess.interrogate.interrogator import Interrogator
from modules.controlnet.preprocessors import Preprocessors
from modules.models import files
from modules.models.detect import PREDICTION_TYPES
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry, HashCache
from modules.options import Options, comma_list
from modules.paths import Paths
from modules.postprocess.face_restoration import FaceRestorers
from modules.diffusion.previews import Previews
from modules.generation.generator import Generator
from modules.generation.request import GenerationRequest
from modules.addons.script_loading import ScriptHost
from modules.postprocess.upscalers import Upscalers

if TYPE_CHECKING:
    from modules.controlnet.units import ControlNetUnit
    from modules.models.merger import MergeRequest
    from modules.postprocess.postprocessing import ExtrasRequest
    from modules.training.controlnet_training import TrainControlNetRequest
    from modules.training.lora_requests import TrainLoraRequest
    from modules.training.preprocess import PreprocessRequest
    from modules.training.requests import (CreateEmbeddingRequest, CreateHypernetworkRequest, TrainEmbeddingRequest,
                                           TrainHypernetworkRequest)

log = logging.getLogger(__name__)

# Settings naming folders images are saved to (relative to the data folder, or absolute).
OUTPUT_FOLDER_OPTIONS = ("outdir_txt2img_samples", "outdir_txt2img_grids", "outdir_img2img_samples",
                         "outdir_img2img_grids", "outdir_extras_samples", "control_net_detectedmap_dir",
                         "outdir_save")


@dataclass
class Services:
    args: argparse.Namespace
    paths: Paths
    options: Options
    devices: devices.DeviceConfig
    registry: CheckpointRegistry
    models: ModelManager
    queue: JobQueue
    generator: Generator
    networks: extra_networks.ExtraNetworks
    upscalers: Upscalers
    restorers: FaceRestorers
    controlnet: ControlNet
    hashes: HashCache   # sha256 of model files, cached in cache.json (A1111's "hashes")
    interrogator: Interrogator   # BLIP + CLIP and DeepBooru, loaded on first use (img2img, Prepare, the API)

    @property
    def scripts(self) -> ScriptHost:
        """Loaded scripts, extensions and their callbacks (the generator runs them)."""
        return self.generator.scripts

    def submit_txt2img(self, request: GenerationRequest, job_id: str | None = None,
                       by: Submitter = Submitter()) -> Job:
        return self.queue.submit("txt2img", lambda job: self.generator.txt2img(request, job), job_id=job_id, by=by)

    def submit_img2img(self, request: GenerationRequest, job_id: str | None = None,
                       by: Submitter = Submitter()) -> Job:
        return self.queue.submit("img2img", lambda job: self.generator.img2img(request, job), job_id=job_id, by=by)

    def submit_extras(self, request: "ExtrasRequest", inputs: list, job_id: str | None = None,
                      output_dir: Path | None = None, by: Submitter = Submitter()) -> Job:
        """Extras (upscale, face restoration) on [(image, file name)]; runs on the worker, which owns the device.
        `output_dir`: save there instead of outputs/extras-images (Batch from Directory)."""
        from modules.postprocess import postprocessing

        def run(job: Job):
            try:
                return postprocessing.run_extras(request, inputs, upscalers=self.upscalers, restorers=self.restorers,
                                                 options=self.options, paths=self.paths, job=job,
                                                 output_dir=output_dir)
            except ValueError as error:   # an unknown upscaler, a broken model file, an over-large result
                raise JobError(str(error)) from None

        return self.queue.submit("extras", run, job_id=job_id, by=by)

    def submit_detect(self, unit: "ControlNetUnit", pictures: list, by: Submitter = Submitter()) -> Job:
        """Run a ControlNet unit's preprocessor on each picture, on the worker (it owns the device);
        the job's result is the list of maps."""
        from modules.controlnet.plan import ControlNetError

        def run(job: Job):
            try:
                return [self.controlnet.detect(unit, picture, picture.width, picture.height)[0]
                        for picture in pictures]
            except ControlNetError as error:   # unknown module, missing annotator weights
                raise JobError(str(error)) from None

        return self.queue.submit("controlnet-detect", run, by=by)

    def submit_model_switch(self, name: str, by: Submitter = Submitter()) -> Job:
        """Load a checkpoint on the worker, the only thread that touches models; the job's result is its title."""
        return self.queue.submit("load-model", lambda job: self.generator.load(name, warm=True).info.title, by=by)

    def submit_model_unload(self, by: Submitter = Submitter()) -> Job:
        """Free every loaded checkpoint (on the worker, after the jobs before it); the next job loads one again."""
        return self.queue.submit("unload-model", lambda job: self.models.unload_all(), by=by)

    def submit_model_reload(self, by: Submitter = Submitter()) -> Job:
        """Load the configured checkpoint (`sd_model_checkpoint`, else the default one); the result is its title."""
        return self.queue.submit(
            "load-model",
            lambda job: self.generator.load(self.options.sd_model_checkpoint or None, warm=True).info.title, by=by)

    def submit_merge(self, request: "MergeRequest") -> Job:
        """The Checkpoint Merger, on the worker (after the jobs before it); the result is the new file's
        CheckpointInfo, listed and hashed, or None when interrupted."""
        from modules.models import merger

        def run(job: Job):
            try:
                path = merger.merge(request, self.registry, self.networks.vaes, job=job)
            except ValueError as error:   # a missing model, a bad name, regex or JSON, shapes that do not fit
                raise JobError(str(error)) from None
            except OSError as error:      # the disk is full, the folder is read-only
                raise StorageFull(f"could not write the merged checkpoint: {error}") from None
            if path is None:
                return None
            self.registry.refresh()
            info = self.registry.find(path.relative_to(self.registry.folder).as_posix())
            self.models.forget(info.name)   # an overwritten file that is in the RAM cache loads anew
            return self.registry.ensure_hash(info)

        return self.queue.submit("model-merge", run)

    def submit_preprocess(self, request: "PreprocessRequest", by: Submitter = Submitter()) -> Job:
        """Train → Prepare: a folder of images into a training folder (cropped, split, flipped, captions kept);
        the result is a training.preprocess.PreprocessResult."""
        from modules.training import preprocess

        return self.queue.submit("preprocess", lambda job: preprocess.preprocess(
            request, job, self.interrogator, self.options.snapshot()), by=by)

    def submit_interrogate(self, image, model: str, job_id: str | None = None, by: Submitter = Submitter()) -> Job:
        """A1111's Interrogate: "clip" (a BLIP caption and CLIP's matches) or "deepdanbooru" (tags) of one image;
        the result is the text. Missing weights are a NotFound naming the file."""
        return self.queue.submit("interrogate",
                                 lambda job: self.interrogator.interrogate(image, model, self.options.snapshot()),
                                 job_id=job_id, by=by)

    def submit_create_embedding(self, request: "CreateEmbeddingRequest", by: Submitter = Submitter()) -> Job:
        """Train → Create embedding on the worker (it reads the current checkpoint's token embeddings); the
        result is the new file's path."""
        from modules.training import runs

        return self.queue.submit("create-embedding", runs.create_embedding(self, request), by=by)

    def submit_train_embedding(self, request: "TrainEmbeddingRequest", job_id: str | None = None,
                               by: Submitter = Submitter()) -> Job:
        """Textual-inversion training on the current checkpoint; the result is a training.TrainingResult."""
        from modules.training import runs

        return self.queue.submit("train-embedding", runs.train_embedding_run(self, request), job_id=job_id, by=by)

    def submit_create_hypernetwork(self, request: "CreateHypernetworkRequest", by: Submitter = Submitter()) -> Job:
        """Train → Create hypernetwork (no model needed); the result is the new file's path."""
        from modules.training import runs

        return self.queue.submit("create-hypernetwork", runs.create_hypernetwork(self, request), by=by)

    def submit_train_hypernetwork(self, request: "TrainHypernetworkRequest", job_id: str | None = None,
                                  by: Submitter = Submitter()) -> Job:
        """Hypernetwork training on the current checkpoint; the result is a training.TrainingResult."""
        from modules.training import runs

        return self.queue.submit("train-hypernetwork", runs.train_hypernetwork_run(self, request), job_id=job_id,
                                 by=by)

    def submit_train_lora(self, request: "TrainLoraRequest", job_id: str | None = None,
                          by: Submitter = Submitter()) -> Job:
        """LoRA training (peft) on the current checkpoint; the result is a training.TrainingResult."""
        from modules.training import runs

        return self.queue.submit("train-lora", runs.train_lora_run(self, request), job_id=job_id, by=by)

    def submit_train_controlnet(self, request: "TrainControlNetRequest", job_id: str | None = None,
                                by: Submitter = Submitter()) -> Job:
        """ControlNet training on the current checkpoint (its UNet encoder, zero convolutions); the result is a
        training.TrainingResult."""
        from modules.training import runs

        return self.queue.submit("train-controlnet", runs.train_controlnet_run(self, request), job_id=job_id, by=by)

    def switch_model(self, name: str, timeout: float | None = None) -> Job:
        job = self.submit_model_switch(name)
        job.done.wait(timeout)
        return job

    def validate_options(self, changes: dict, *, from_api: bool) -> dict:
        """Settings changes checked against the option registry and the files on disk; ValueError names the key."""
        checked = self.options.validate(changes, from_api=from_api)
        if "sd_vae" in checked:
            if not self.networks.vaes.is_choice(checked["sd_vae"]):
                raise ValueError(f"sd_vae: unknown VAE {checked['sd_vae']!r}; choose one of "
                                 f"{self.networks.vaes.choices()}")
            chosen = self.networks.vaes.find(checked["sd_vae"])
            if chosen is not None:   # a damaged file is refused now, not at every generation after
                try:
                    files.check_readable(chosen.path)
                except files.ModelFileError as error:
                    raise ValueError(f"sd_vae: {error}") from None
        for name, kind in (checked.get("sd_model_prediction_overrides") or {}).items():
            if not isinstance(name, str) or len(name) > 255 or kind not in PREDICTION_TYPES:
                raise ValueError(f"sd_model_prediction_overrides: expected checkpoint name → one of "
                                 f"{list(PREDICTION_TYPES)}, got {str(name)[:80]!r} → {str(kind)[:80]!r}")
        return checked

    def update_options(self, changes: dict, *, from_api: bool) -> None:
        """Apply settings; a changed prediction-type override makes that model reload on its next use."""
        checked = self.validate_options(changes, from_api=from_api)
        before = dict(self.options.sd_model_prediction_overrides or {})
        self.options.update(checked, from_api=from_api)
        after = self.options.sd_model_prediction_overrides or {}
        for name in set(before) | set(after):
            if before.get(name) != after.get(name):
                self.models.forget(name)

    def refresh_checkpoints(self) -> None:
        self.registry.refresh()

    def load_initial_model(self) -> None:
        """Queue loading of --ckpt or the last used checkpoint, unless told not to (or there is none)."""
        if self.args.skip_load_model_at_start or self.args.ui_debug_mode or not self.registry.items():
            return
        wanted = self.args.ckpt
        if wanted and Path(wanted).is_file():
            wanted = str(Path(wanted).resolve())   # a path to a file in the checkpoint folder
        if wanted and self.registry.find(wanted) is None:
            log.warning("--ckpt %s is not in %s; loading the default checkpoint", wanted, self.registry.folder)
            wanted = None

        def load(job: Job):
            try:
                return self.generator.load(wanted, warm=True).info.title
            except JobError as error:
                log.error("%s", error)
                raise

        self.queue.submit("load-model", load)

    def load_scripts(self) -> None:
        """Import our scripts/ and every enabled extension's scripts, then let them add settings
        (on_ui_settings), so the API and the Settings tab both see extensions' options. Idempotent."""
        if self.scripts.loaded:
            return
        from modules import shared
        from modules.addons import extensions, script_loading

        shared.bind(self)   # A1111 extensions read modules.shared at import time
        found = extensions.discover(self.paths, self.options, self.args)
        script_loading.load(self.scripts, self.paths.builtin_scripts, found)
        self.scripts.callbacks.fire("ui_settings")

    def shutdown(self) -> None:
        self.scripts.unload()
        self.queue.shutdown()


def create(args: argparse.Namespace | None = None) -> Services:
    args = args if args is not None else parse_args([])
    images.cap_decoding()   # every image any code opens, Gradio's uploads included
    paths = paths_module.from_args(args)
    paths.ensure()
    compilation.configure_cache(paths.data / "cache" / "torch-compile")   # before anything compiles
    options = Options(paths.config_file, frozen=args.freeze_settings,
                      frozen_sections=comma_list(args.freeze_settings_in_sections),
                      frozen_keys=comma_list(args.freeze_specific_settings))
    leftovers.remove(paths, [paths.data / options.get(key) for key in OUTPUT_FOLDER_OPTIONS if options.get(key)])
    device_config = devices.from_args(args)
    hashes = HashCache(paths.cache_file)
    registry = CheckpointRegistry(paths.checkpoints, hashes, hashing=not args.no_hashing)
    networks = extra_networks.create(paths, hashes, styles_files=args.styles_file, vae_path=args.vae_path,
                                     hashing=not args.no_hashing)
    manager = ModelManager(registry, device_config, options)
    queue = JobQueue(max_waiting=lambda: options.queue_max_size)   # a change applies at once
    upscalers = Upscalers(paths.models, device_config.device, device_config.dtype, options)
    restorers = FaceRestorers(paths.models, device_config.device, device_config.dtype)
    controlnets = ControlNetRegistry(paths.controlnet, hashing=not args.no_hashing)
    controlnet = ControlNet(
        registry=controlnets,
        models=ControlNetCache(controlnets, device_config.device,
                               torch.float32 if args.no_half_controlnet else device_config.dtype,
                               size=lambda: int(options.control_net_model_cache_size)),
        preprocessors=Preprocessors(paths.annotators, device_config.device))
    generator = Generator(manager, options, paths, networks, upscalers=upscalers, controlnet=controlnet,
                          restorers=restorers,
                          previews=Previews(paths.models / "VAE-taesd", device_config.device, device_config.dtype),
                          prompt_history=not args.no_prompt_history)
    generator.scripts = ScriptHost()   # filled by load_scripts
    # extensions get A1111's view of the model (sd_checkpoint_info, is_sdxl, ...), as shared.sd_model gives it
    manager.on_loaded = lambda model: generator.scripts.callbacks.model_loaded(sd_models.WebuiSdModel(model))
    return Services(args=args, paths=paths, options=options, devices=device_config, registry=registry,
                    models=manager, queue=queue, generator=generator, networks=networks, upscalers=upscalers,
                    restorers=restorers, controlnet=controlnet, hashes=hashes,
                    interrogator=Interrogator(paths.models, paths.data, device_config.device, device_config.dtype,
                                             clip_models_path=args.clip_models_path))

