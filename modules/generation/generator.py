"""Running a GenerationRequest on a loaded model: the phases of one generation, each batch, and the result.

`Generator.txt2img` / `img2img` run inside the job worker. diffusers' pipelines do the maths: this module picks the
pipeline, scheduler, conditioning and noise, and writes the results A1111-style. It knows nothing of scripts
beyond `Scripts` (addons/ gives the real one) and the hooks a generation is handed (`context.ScriptHooks`).
"""
from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import dataclass, field

import torch
from PIL import Image

from modules import extra_networks, images
from modules.controlnet import plan as controlnet_plan
from modules.devices import FULL
from modules.diffusion import compilation, features, rng, sampling, stop_points, token_merging, warmup
from modules.diffusion.ksampling.plan import SamplerSettings
from modules.generation import hires as hires_fix, image_prompts, img2img, passes, results
from modules.generation.context import ImagePrompts, JobContext, ScriptHooks
from modules.generation.saving import Saver, write_params
from modules.jobs import Job, JobError, NotFound, NotReady, OutOfMemory
from modules.models.manager import CheckpointLoadError, CheckpointNotFound, LoadedModel, ModelManager
from modules.networks import features as network_features, textual_inversion
from modules.networks.cards import read_user_metadata
from modules.networks.vae import VaeLoadError
from modules.options import Options, Settings
from modules.paths import Paths
from modules.postprocess import face_restoration
from modules.postprocess.upscalers import UpscalerError
from modules.prompts import conditioning, limits
from modules.script_callbacks import CallbackRegistry

log = logging.getLogger(__name__)


class Scripts:
    """The scripts a generation may go through (addons.script_loading.ScriptHost is the real one): this one has
    none, and extensions' callbacks none."""

    def __init__(self):
        self.callbacks = CallbackRegistry()

    def take_part(self, request) -> bool:
        """Whether `request` runs through scripts (always-on ones in its tab, or a chosen one)."""
        return False

    def run(self, generator: Generator, request, job: Job):
        raise NotImplementedError


@dataclass
class _Batch:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)

    def add(self, other: _Batch) -> None:
        for name in ("images", "infotexts", "seeds", "subseeds", "prompts", "negative_prompts", "saved"):
            getattr(self, name).extend(getattr(other, name))


def _new_interrupt(job: Job):
    """For a decode: stop on an interrupt that comes while it runs. A batch whose sampling an interrupt cut short is
    still decoded, as A1111 shows that image."""
    already = job.interrupted
    return lambda: job.interrupted and not already


class Generator:
    """Runs requests on the models of a ModelManager; lives in the job worker."""

    def __init__(self, manager: ModelManager, options: Options, paths: Paths,
                 networks: extra_networks.ExtraNetworks, *, upscalers=None, controlnet=None, previews=None,
                 prompt_history: bool = True, restorers=None):
        self.manager = manager
        self.controlnet = controlnet
        self.networks = networks
        self.options = options
        self.paths = paths
        self.upscalers = upscalers
        self.restorers = restorers   # face restoration (A1111's restore_faces)
        self.prompt_history = prompt_history
        self.previews = previews
        self._warmed: weakref.WeakSet = weakref.WeakSet()   # pipelines warmed up after loading
        self.scripts: Scripts = Scripts()   # replaced by the loaded ones (services.load_scripts)

    # ------------------------------------------------------------- models

    def load(self, checkpoint: str | None, *, make_current: bool = True, remember: bool = True,
             warm: bool = False) -> LoadedModel:
        """The checkpoint, loaded and current; with `warm` (load jobs), warmed up the first time (warmup)."""
        try:
            model = self.manager.get(checkpoint, make_current=make_current, remember=remember)
        except CheckpointNotFound as error:
            raise (NotFound if checkpoint else NotReady)(str(error)) from None
        except CheckpointLoadError as error:
            raise JobError(str(error)) from None
        if warm:
            self._warm_up(model)
        return model

    def _compile(self, model: LoadedModel, settings: Settings | Options) -> None:
        compilation.apply(model.pipeline, settings.compile_unet, bool(settings.compile_vae),
                          cuda=self.manager.devices.is_cuda, memory=self.manager.placement.mode(model))

    def _warm_up(self, model: LoadedModel) -> None:
        """On CUDA with the whole model on the GPU (the offloading modes are slow for other reasons), once per
        loaded model. A failed warm-up is logged and never fails the load."""
        devices = self.manager.devices
        if (not devices.is_cuda or not self.options.warmup_after_load or model.pipeline in self._warmed
                or self.manager.placement.mode(model) != FULL):
            return
        self._warmed.add(model.pipeline)
        try:
            self._compile(model, self.options)   # with compile_unet the warm-up compiles the native size
            warmup.warm_up(model, devices.device, nan_check=devices.nan_check)
        except torch.OutOfMemoryError:
            log.warning("not enough GPU memory to warm up %s at its native size", model.info.name)
        except Exception:  # noqa: BLE001 - the model is loaded and usable; the warm-up only saves time
            log.exception("warming up %s failed", model.info.name)
        finally:
            self.manager.release_memory()

    # ------------------------------------------------------------- entry points (the job worker calls these)

    def txt2img(self, request, job: Job) -> results.GenerationResult:
        if request.init_images:
            raise JobError("init_images: txt2img takes no init image; use img2img")
        return self._guarded(request, self._run, request, job)

    def img2img(self, request, job: Job) -> results.GenerationResult:
        if not request.init_images:
            raise JobError("init_images: img2img needs an image to start from")
        return self._guarded(request, self._run, request, job)

    def _run(self, request, job: Job) -> results.GenerationResult:
        if self.scripts.take_part(request):
            return self.scripts.run(self, request, job)
        return self.generate(request, job)

    def _guarded(self, request, run, *args):
        """Run with the request's option overrides; out of memory becomes a clear error with memory freed."""
        try:
            with self.options.overridden(request.option_overrides):   # what scripts read through shared.opts
                return run(*args)
        except limits.PromptTooLarge as error:   # after styles and embeddings: longer than the request looked
            raise JobError(f"prompt: {error}") from None
        except UpscalerError as error:   # a script's upscaler (SD upscale) that cannot be used; it names the file
            raise JobError(str(error)) from None
        except torch.OutOfMemoryError:
            pass   # freed below, outside this block: the exception's traceback holds the failed job's tensors
        if self.controlnet is not None:   # ControlNets and annotators load again when next needed
            self.controlnet.models.clear()
            self.controlnet.preprocessors.unload()
        self.manager.release_memory()
        raise OutOfMemory("out of GPU memory: lower the size or batch size, or use --medvram")

    def save(self, image: Image.Image, option: str, seed: int | None, text: str, *, grid: bool = False, p=None):
        """Save an image a script made (a grid of its cells) with the settings in effect now."""
        return Saver(self.paths.data, self.options.snapshot(), self.scripts.callbacks, p).save(
            image, option, seed, text, grid=grid)

    # ------------------------------------------------------------- one generation

    def generate(self, request, job: Job, extra_params: dict | None = None, hooks: ScriptHooks | None = None,
                 chosen: ImagePrompts | None = None) -> results.GenerationResult:
        """One request, txt2img or img2img by whether it has init images (scripts call this for each of theirs);
        `extra_params` are more infotext keys (a script's); `hooks` the scripts' per-batch and per-image hooks;
        `chosen` the prompts and seeds a script gave each image."""
        # 1. The job's settings, fixed now, and its models: a checkpoint the request names is used for it,
        #    not remembered as the user's choice.
        settings = self.options.snapshot()
        model = self.load(request.checkpoint, remember=False)
        if not model.family.generates and not request.init_images:
            raise JobError(f"{model.info.name} is an {model.family.label}: it refines images from a base model "
                           "and cannot generate on its own. Choose a base checkpoint, and this one as the Refiner.")
        ctx = JobContext(request, job, settings, model, hooks or ScriptHooks(),
                         extra_params if extra_params is not None else {})
        ctx.refiner = passes.refiner_for(self, request, model)
        # 2. Each image's prompt: styles applied, network tags taken out, within the limits; the VAE and text
        #    encoder.
        chosen = chosen or ImagePrompts()
        ctx.image_prepared = image_prompts.prepare(request, chosen, self.networks)
        ctx.prepared = ctx.image_prepared[0]
        distinct = list({id(prepared): prepared for prepared in ctx.image_prepared}.values())
        for prepared in distinct:
            limits.check(prepared.prompt)
            limits.check(prepared.negative, positive=False)
        vae_info, external_vae = self._vae_for(ctx)
        self.networks.embeddings.refresh()   # cheap: re-reads only files that changed, as A1111 picks up new ones
        ctx.clip_skip = request.clip_skip or int(settings.CLIP_stop_at_last_layers)
        ctx.encoder = self.encoder(model, ctx.clip_skip, ctx)
        # 3. Seeds and inputs: init images, ControlNet annotations, the hires plan, token merging.
        ctx.seeds, ctx.subseeds = image_prompts.seeds(request, chosen)
        self._prepare_inputs(ctx)
        # 4. The job's networks, VAE and memory placement on; each batch's prompts encoded and the batch sampled.
        #    Batches whose prompts name other networks run in their own group (network_groups). An interrupt
        #    while networks load, a prompt is encoded or a batch's first step runs ends the job with the images
        #    made so far (stop_points); the ExitStack still takes the networks off.
        made = _Batch()
        saver = Saver(self.paths.data, settings, self.scripts.callbacks, ctx.hooks.p)
        ctx.warnings = list(dict.fromkeys(warning for prepared in distinct for warning in prepared.warnings))
        for warning in ctx.warnings:
            log.warning("%s", warning)
        ctx.vae_info = vae_info
        for group, (named_by, batch_indexes) in enumerate(image_prompts.network_groups(ctx)):
            with contextlib.ExitStack() as stack, contextlib.suppress(stop_points.Interrupted):
                if group:   # the text encoders' LoRAs change: nothing encoded before may be reused
                    ctx.encoder = self.encoder(model, ctx.clip_skip, ctx)
                ctx.used_loras = self._apply_networks(stack, ctx, named_by, external_vae)
                if ctx.inputs is not None and ctx.encoded is None:
                    ctx.encoded = img2img.encode_inputs(model.pipeline, ctx.inputs,
                                                        inpainting=model.spec.inpainting,
                                                        should_stop=lambda: job.interrupted)
                for batch_index in batch_indexes:
                    if job.interrupted:
                        break
                    made.add(self._batch(ctx, batch_index, saver))
            if job.interrupted:
                break
        # 5. The grid, params.txt and the result.
        return self._result(ctx, made, saver, vae_info)

    def _prepare_inputs(self, ctx: JobContext) -> None:
        request, job, settings = ctx.request, ctx.job, ctx.settings
        # Progress counts the job's batches: a script running many generations in one job (X/Y/Z cells, loops)
        # keeps counting on, up to the total it announced.
        job.image_count = max(job.image_count, job.batches_done + request.n_iter)
        job.textinfo = "Encoding prompt"
        if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0:
            ctx.resize_from = (request.seed_resize_from_h, request.seed_resize_from_w)
        if ctx.image_mode:
            ctx.inputs = img2img.prepare(request, background=settings.img2img_background_color,
                                         upscale=self._img2img_upscaler(settings))
        ctx.sampler_settings = SamplerSettings.of(settings)
        ctx.hires = hires_fix.HiresPlan.of(request) if request.enable_hr and not ctx.image_mode else None
        ctx.controls = self._controls(ctx)
        ctx.first_controls = controlnet_plan.pass_controls(
            ctx.controls, request.width, request.height, hires_pass=False, hires_enabled=ctx.hires is not None,
            region=ctx.inputs.region if ctx.inputs else None,
            source_size=request.init_images[0].size if ctx.inputs else None)
        if ctx.hires is not None:
            ctx.hires_controls = controlnet_plan.pass_controls(ctx.controls, *ctx.hires.target, hires_pass=True,
                                                               hires_enabled=True)
        ctx.tome_ratio, ctx.tome_hires_ratio = token_merging.ratios(settings, image_mode=ctx.image_mode)

    def _apply_networks(self, stack: contextlib.ExitStack, ctx: JobContext, prepared, external_vae) -> list:
        """The job features (the LoRAs and hypernetworks `prepared` names, the VAE) on for this job only, taken
        off on the way out even on errors; then compile and the memory mode's offload hooks. Returns the LoRAs in
        effect (for the infotext)."""
        pipe, should_stop = ctx.model.pipeline, lambda: ctx.job.interrupted
        loras = network_features.Loras(prepared.loras, ctx.model.family, self.networks.lora_cache, should_stop)
        hypernetworks = network_features.Hypernetworks(prepared.hypernetworks,
                                                       self.networks.hypernetwork_cache, should_stop)
        for feature in (loras, hypernetworks, network_features.ExternalVae(external_vae)):
            stack.enter_context(feature.patch(pipe))
        ctx.warnings += loras.warnings + hypernetworks.warnings
        used = (ctx.model, *([ctx.refiner.model] if ctx.refiner else []))
        for model in used:   # compile_unet (the VAE swapped in too)
            self._compile(model, ctx.settings)
        # medvram/lowvram: offload hooks on once the job's weights are in place, off before they are removed
        stack.enter_context(self.manager.placement.job(*used))
        return loras.used

    def _batch(self, ctx: JobContext, batch_index: int, saver: Saver) -> _Batch:
        """One batch: noise → first pass → hires pass → decode → scripts' hooks → finished, saved images."""
        request, job, model, settings = ctx.request, ctx.job, ctx.model, ctx.settings
        pipe = model.pipeline
        job.image_index = job.batches_done
        first = batch_index * request.batch_size
        seeds = ctx.seeds[first:first + request.batch_size]
        subseeds = ctx.subseeds[first:first + request.batch_size]
        prepared = ctx.batch_prepared(batch_index)
        ctx.batch_texts = ([one.text for one in prepared], [one.negative_text for one in prepared])
        job.textinfo = "Encoding prompt"   # (texts encoded before are reused)
        ctx.plan = conditioning.schedule_batch(ctx.encoder, *ctx.batch_texts,
                                               sampling.plan_length(request.sampler_name, request.steps))
        ctx.job_params = results.job_params(ctx, ctx.used_loras, ctx.vae_info)
        job.textinfo = f"Batch {job.image_index + 1} of {job.image_count}"

        def seed_noise(width: int, height: int) -> rng.ImageRNG:
            """The batch's generators for a pass at this size (A1111 makes new ones for the hires pass)."""
            scale = sampling.vae_scale(pipe)
            shape = (pipe.vae.config.latent_channels, height // scale, width // scale)
            return rng.ImageRNG(shape, seeds, subseeds=subseeds, subseed_strength=request.subseed_strength,
                                resize_from=ctx.resize_from, source=ctx.sampler_settings.randn_source,
                                device=self.manager.devices.device,
                                eta_noise_seed_delta=ctx.sampler_settings.eta_noise_seed_delta)

        generators = seed_noise(request.width, request.height)
        first_noise = generators.next()
        step = sampling.Pass(request.sampler_name, request.scheduler, request.steps, request.cfg_scale,
                             request.width, request.height, ctx.plan, first_noise, rng=generators, seeds=seeds,
                             exact_steps=ctx.image_mode and ctx.sampler_settings.img2img_fix_steps,
                             eta=request.eta, settings=ctx.sampler_settings, controls=ctx.first_controls,
                             token_merging_ratio=ctx.tome_ratio)
        if ctx.encoded is not None:
            img2img.add_image(step, request, ctx.inputs, ctx.encoded, first, first_noise)
        ctx.hooks.before_batch(batch_index, [one.prompt for one in prepared], seeds, subseeds)
        try:
            with features.Tiling(request.tiling).patch(pipe):
                latents = passes.run_pass(self, ctx, step, ctx.refiner if ctx.hires is None else None)
                sampler_infotext = step.infotext
                if ctx.hires is not None and not job.interrupted:
                    second = passes.second_pass(self, ctx, latents, seed_noise, seeds)
                    latents = passes.run_pass(self, ctx, second, ctx.refiner)
                    sampler_infotext = {**second.infotext, **sampler_infotext}
                decoded = sampling.decode(pipe, latents, nan_check=self.manager.devices.nan_check,
                                          should_stop=_new_interrupt(job))
        except stop_points.Interrupted:
            if job.interrupted:
                raise
            job.batches_done += 1   # skipped before its first step finished: no image from this batch
            job.consume_skip()
            return _Batch()
        # Scripts may drop or add images: seeds and prompts follow (an added image gets the last).
        decoded = ctx.hooks.after_batch(decoded, batch_index)
        seeds = (seeds + seeds[-1:] * len(decoded))[:len(decoded)]
        subseeds = (subseeds + subseeds[-1:] * len(decoded))[:len(decoded)]
        prepared = (prepared + prepared[-1:] * len(decoded))[:len(decoded)]
        extra = {**img2img.infotext_params(request),
                 **(hires_fix.HiresPlan.infotext(request) if ctx.hires else {}),
                 **(ctx.refiner.infotext() if ctx.refiner else {}),
                 **{key: value for key, value in sampler_infotext.items() if key != "Schedule type"},
                 **ctx.extra_params,
                 **controlnet_plan.infotext_params(ctx.controls, ctx.hires is not None),
                 "Token merging ratio": ctx.tome_ratio or None,
                 "Token merging ratio hr": ctx.tome_hires_ratio if ctx.hires and ctx.tome_hires_ratio else None}
        made = _Batch(seeds=seeds, subseeds=subseeds, prompts=[one.prompt for one in prepared],
                      negative_prompts=[one.negative for one in prepared])
        for index, image in enumerate(decoded):
            image = face_restoration.restore_generated(self.restorers, ctx, image)
            if ctx.inputs is not None and index < request.batch_size:
                image = img2img.finish(image, ctx.inputs, first + index)
            image = ctx.hooks.postprocess_image(image)
            text = results.image_infotext(ctx, prepared[index], ctx.job_params, seeds[index], subseeds[index],
                                          extra)
            if request.save_images and settings.samples_save:
                made.saved.append(str(saver.save(image, f"outdir_{ctx.outdir}_samples", seeds[index], text)))
            image.info["parameters"] = text
            made.images.append(image)
            made.infotexts.append(text)
        job.batches_done += 1
        job.consume_skip()
        return made

    def _result(self, ctx: JobContext, made: _Batch, saver: Saver, vae_info) -> results.GenerationResult:
        request, settings = ctx.request, ctx.settings
        index_of_first = 0
        if request.save_grid and len(made.images) > 1 and settings.grid_save:
            grid = images.make_grid(made.images)
            text = made.infotexts[0]
            made.saved.append(str(saver.save(grid, f"outdir_{ctx.outdir}_grids", made.seeds[0], text, grid=True)))
            grid.info["parameters"] = text
            made.images.insert(0, grid)
            made.infotexts.insert(0, text)
            index_of_first = 1
        if made.infotexts and self.prompt_history:
            write_params(self.paths.params_file, made.infotexts[-1])
        result = results.GenerationResult(
            images=made.images, infotexts=made.infotexts, seeds=made.seeds, subseeds=made.subseeds,
            prompts=made.prompts, negative_prompts=made.negative_prompts, request=request,
            index_of_first_image=index_of_first, saved=made.saved, warnings=ctx.warnings,
            detected_maps=self._detected_maps(ctx, saver))
        result.info = results.info_dict(ctx, vae_info, result, ctx.extra_params)
        return result

    # ------------------------------------------------------------- the parts of a generation

    def _vae_for(self, ctx: JobContext):
        """The external VAE this job uses (None: the checkpoint's own), A1111's `sd_vae` rules."""
        request, model, settings = ctx.request, ctx.model, ctx.settings
        setting = request.vae or settings.sd_vae
        try:
            info = self.networks.vaes.resolve(
                setting, model.info, preferred=read_user_metadata(model.info.filename).get("vae"),
                setting_overrides_preferred=settings.sd_vae_overrides_per_model_preferences)
            vae_dtype = self.manager.devices.vae_dtype_for(model.family)
            loaded = self.networks.vae_cache.get(info, model.spec, vae_dtype) if info else None
        except (ValueError, VaeLoadError) as error:
            raise JobError(f"VAE: {error}") from None
        return info, loaded

    def encoder(self, model: LoadedModel, clip_skip: int, ctx: JobContext) -> conditioning.TextEncoder:
        embeddings, _ = self.networks.embeddings.for_model(textual_inversion.encoder_widths(model.pipeline))
        return conditioning.TextEncoder(model.pipeline, model.family, clip_skip=clip_skip,
                                        emphasis=ctx.settings.emphasis, embeddings=embeddings,
                                        should_stop=lambda: ctx.job.interrupted)

    def _controls(self, ctx: JobContext) -> list:
        """The job's ControlNet units, annotated and loaded once (each pass resizes their maps)."""
        request = ctx.request
        if not any(unit.enabled for unit in request.controlnet_units):
            return []
        if self.controlnet is None:
            raise JobError("controlnet_units: ControlNet is not available in this server")
        init_image = request.init_images[0].convert("RGB") if request.init_images else None
        try:
            return self.controlnet.prepare(request.controlnet_units, ctx.model.family, request.width,
                                           request.height, init_image)
        except controlnet_plan.ControlNetError as error:
            raise JobError(f"controlnet_units: {error}") from None

    def _detected_maps(self, ctx: JobContext, saver: Saver) -> list[Image.Image]:
        """The annotations to show after the images (the extension's side-by-side view), saved if asked."""
        if ctx.settings.control_net_no_detectmap:
            return []
        maps = [unit.detected_map for unit in ctx.controls if unit.unit.save_detected_map]
        if ctx.settings.control_net_detectmap_autosaving:
            for detected in maps:
                saver.save(detected, "control_net_detectedmap_dir", ctx.seeds[0], "")
        return maps

    def _img2img_upscaler(self, settings: Settings):
        """A1111's upscaler_for_img2img: used when a resize enlarges the input ("None" = Lanczos)."""
        name = settings.upscaler_for_img2img
        if self.upscalers is None or not name or name == "None" or self.upscalers.find(name) is None:
            return None
        return lambda image, scale: self.upscalers.upscale(image, scale, self.upscalers.find(name))
