"""A1111's processing API, where scripts and extensions import it from: `p` (StableDiffusionProcessing*),
`Processed`, `process_images(p)`, `fix_seed`, `get_fixed_seed`, `create_infotext`, `create_random_tensors`,
`create_binary_mask`, `opt_f`/`opt_C`.

`p` is a mutable object carrying every field of our `GenerationRequest` under A1111's names, plus A1111's
extras (`extra_generation_params`, `all_prompts`, `all_seeds`, `override_settings`, `script_args`, ...).
Scripts change it freely; `process_images(p)` turns it back into a `GenerationRequest` through the one
validator (so a script cannot smuggle in a value the API would refuse) and runs it on the generation core,
calling the always-on scripts' hooks at A1111's points. A dropdown script's `run(p, *args)` calls
`process_images` as often as it likes (X/Y/Z plot, prompt matrix) within the same job.
"""
from __future__ import annotations

import copy
import json
import logging
from typing import Any

from PIL import Image

from modules import sd_models, shared
from modules.diffusion import noise
from modules.generation.context import ImagePrompts, ScriptHooks as NoHooks
from modules.generation.request import OVERRIDE_FIELDS, GenerationRequest, validate_request
from modules.generation.results import GenerationResult
from modules.jobs import Job, JobError
from modules.scripts import PostprocessBatchListArgs, PostprocessImageArgs, ScriptRunner

log = logging.getLogger(__name__)

opt_C = 4   # A1111's latent channels and VAE scale factor (SD 1.x, 2.x and SDXL)
opt_f = 8


def request_fields() -> dict[str, Any]:
    return {name: info.get_default(call_default_factory=True)
            for name, info in GenerationRequest.model_fields.items()}


class StableDiffusionProcessing:
    """A1111's processing object. Constructed with A1111 keyword arguments; unknown ones are kept as attributes."""

    def __init__(self, **kwargs):
        fields = request_fields()
        for name, value in fields.items():
            setattr(self, name, value)
        self.override_settings: dict = {}
        self.override_settings_restore_afterwards = True
        self.extra_generation_params: dict = {}
        self.do_not_save_samples = False
        self.do_not_save_grid = False
        self.all_prompts: list[str] = []
        self.all_negative_prompts: list[str] = []
        self.all_seeds: list[int] = []
        self.all_subseeds: list[int] = []
        self.prompts: list[str] = []
        self.negative_prompts: list[str] = []
        self.seeds: list[int] = []
        self.subseeds: list[int] = []
        self.iteration = 0
        self.scripts: ScriptRunner | None = None
        self.script_args: list = []      # A1111's flat list: [chosen dropdown script's index, *each script's args]
        self.sd_model = None             # the loaded model once the generation has loaded it (sd_models.WebuiSdModel)
        self.outpath_samples = self.outpath_grids = ""
        self.comments: dict = {}
        self.user = ""
        self._generator = None
        self._job: Job | None = None
        for name, value in kwargs.items():
            setattr(self, name, value)

    def __copy__(self):
        """copy.copy(p), as scripts do for each run: the lists and dicts a script changes are copied too."""
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        for name in ("styles", "override_settings", "extra_generation_params", "comments"):
            setattr(twin, name, copy.copy(getattr(self, name)))
        return twin

    # A1111's names for a few of ours
    @property
    def image_mask(self):
        return self.mask

    @image_mask.setter
    def image_mask(self, value):
        self.mask = value

    @property
    def is_img2img(self) -> bool:
        return bool(self.init_images)

    def to_request(self):
        """The validated GenerationRequest this object describes; ValueError-like problems become JobErrors."""
        from pydantic import ValidationError

        data = {name: getattr(self, name) for name in request_fields()}
        data["save_images"] = bool(data["save_images"]) and not self.do_not_save_samples
        data["save_grid"] = bool(data["save_grid"]) and not self.do_not_save_grid
        overrides = dict(data.get("option_overrides") or {})
        for key, value in (self.override_settings or {}).items():
            if key in OVERRIDE_FIELDS:
                data[OVERRIDE_FIELDS[key]] = value
            else:
                overrides[key] = value
        generator = self._generator
        if generator is not None and overrides:
            try:
                overrides = {key: generator.options.validate({key: value}, from_api=False)[key]
                             for key, value in overrides.items()}
            except ValueError as error:
                raise JobError(f"override_settings: {error}") from None
        data["option_overrides"] = overrides
        data["extension_scripts"] = {}      # scripts already ran: what is validated here is the plain request
        data["selected_script"] = None
        for name in ("prompt", "negative_prompt"):   # A1111 takes a list: one per image (see _setup_prompts)
            if isinstance(data.get(name), list):
                data[name] = str(data[name][0]) if data[name] else ""
        context = {} if generator is None else dict(
            registry=generator.manager.registry, networks=generator.networks, upscalers=generator.upscalers,
            controlnet=generator.controlnet)
        try:
            return validate_request(data, **context)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "request"
            raise JobError(f"{where}: {problem['msg']}") from None


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    pass


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    pass


class Processed:
    """A1111's result object: images, infotexts, seeds and the `info` JSON string."""

    def __init__(self, p: StableDiffusionProcessing, images_list: list, seed: int = -1, info: str = "",
                 subseed: int | None = None, all_prompts: list | None = None, all_negative_prompts: list | None = None,
                 all_seeds: list | None = None, all_subseeds: list | None = None, index_of_first_image: int = 0,
                 infotexts: list | None = None, comments: str = "", extra_images_list: list | None = None):
        self.images = list(images_list)
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.subseed = subseed
        self.info = info
        self.comments = comments
        self.width, self.height = p.width, p.height
        self.sampler_name, self.scheduler = p.sampler_name, p.scheduler
        self.cfg_scale, self.steps, self.batch_size = p.cfg_scale, p.steps, p.batch_size
        self.denoising_strength = p.denoising_strength
        self.extra_generation_params = dict(p.extra_generation_params)
        self.index_of_first_image = index_of_first_image
        self.styles = list(p.styles)
        self.all_prompts = all_prompts or [p.prompt]
        self.all_negative_prompts = all_negative_prompts or [p.negative_prompt]
        self.all_seeds = all_seeds or [seed]
        self.all_subseeds = all_subseeds or [subseed if subseed is not None else -1]
        self.infotexts = infotexts or [info] * len(self.images)
        self.extra_images = list(extra_images_list or [])
        self.warnings: list[str] = []
        self.saved: list[str] = []

    def infotext(self, p: StableDiffusionProcessing, index: int) -> str:
        """A1111's: the infotext of image `index` (counted without the grid)."""
        texts = self.infotexts[self.index_of_first_image:]
        return texts[index] if 0 <= index < len(texts) else create_infotext(p, self.all_prompts, self.all_seeds,
                                                                           self.all_subseeds, index=index)

    def js(self) -> str:
        return json.dumps({"prompt": self.prompt, "all_prompts": self.all_prompts,
                           "negative_prompt": self.negative_prompt, "seed": self.seed, "all_seeds": self.all_seeds,
                           "subseed": self.subseed, "all_subseeds": self.all_subseeds, "width": self.width,
                           "height": self.height, "sampler_name": self.sampler_name, "cfg_scale": self.cfg_scale,
                           "steps": self.steps, "batch_size": self.batch_size, "infotexts": self.infotexts,
                           "index_of_first_image": self.index_of_first_image,
                           "extra_generation_params": self.extra_generation_params}, ensure_ascii=False,
                          default=str)

    @classmethod
    def from_result(cls, p: StableDiffusionProcessing, result) -> "Processed":
        processed = cls(p, result.images, seed=result.seeds[0] if result.seeds else -1, info=result.info_json(),
                        subseed=result.subseeds[0] if result.subseeds else -1,
                        all_prompts=result.prompts or p.all_prompts,
                        all_negative_prompts=result.negative_prompts or p.all_negative_prompts,
                        all_seeds=result.seeds, all_subseeds=result.subseeds,
                        index_of_first_image=result.index_of_first_image, infotexts=result.infotexts,
                        extra_images_list=result.detected_maps)
        processed.warnings, processed.saved = list(result.warnings), list(result.saved)
        processed._result = result
        return processed

    def to_result(self, request):
        """The GenerationResult the job returns (UI gallery, API response)."""
        base = getattr(self, "_result", None)
        infotexts = list(self.infotexts) + [self.info] * (len(self.images) - len(self.infotexts))
        info = json.loads(self.info) if self.info.startswith("{") else (base.info if base else {})
        return GenerationResult(images=self.images, infotexts=infotexts[:len(self.images)],
                                seeds=list(self.all_seeds), subseeds=list(self.all_subseeds), request=request,
                                index_of_first_image=self.index_of_first_image, saved=list(self.saved),
                                warnings=list(self.warnings), info=info, detected_maps=list(self.extra_images))


class ScriptHooks(NoHooks):
    """What the generation core calls at A1111's hook points, for one `p`: the always-on scripts' hooks."""

    def __init__(self, p: StableDiffusionProcessing):
        self.p = p
        self.runner = p.scripts

    def before_batch(self, batch_number: int, prompts: list[str], seeds: list[int], subseeds: list[int]) -> None:
        p = self.p
        p.iteration = batch_number
        p.prompts, p.seeds, p.subseeds = prompts, seeds, subseeds
        first = batch_number * p.batch_size
        p.negative_prompts = p.all_negative_prompts[first:first + len(prompts)] or [p.negative_prompt] * len(prompts)
        if self.runner is not None:
            kwargs = dict(batch_number=batch_number, prompts=prompts, seeds=seeds, subseeds=subseeds)
            self.runner.before_process_batch(p, **kwargs)
            self.runner.process_batch(p, **kwargs)

    def after_batch(self, images: list[Image.Image], batch_number: int) -> list[Image.Image]:
        if self.runner is None:
            return images
        self.runner.postprocess_batch(self.p, images, batch_number=batch_number)
        listed = PostprocessBatchListArgs(list(images))
        self.runner.postprocess_batch_list(self.p, listed, batch_number=batch_number)
        return [image for image in listed.images if isinstance(image, Image.Image)]

    def postprocess_image(self, image: Image.Image) -> Image.Image:
        if self.runner is None:
            return image
        pp = PostprocessImageArgs(image)
        self.runner.postprocess_image(self.p, pp)
        return pp.image if isinstance(pp.image, Image.Image) else image


_PER_IMAGE = ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds")


def _setup_prompts(p: StableDiffusionProcessing) -> dict[str, list]:
    """A1111's setup_prompts and seed resolution: one prompt (styles applied), negative prompt, seed and variation
    seed per image (`p.prompt` may be a list: one per image). Returns the lists as set, to see what scripts change."""
    count = p.batch_size * p.n_iter
    prompts = [str(x) for x in p.prompt] if isinstance(p.prompt, list) else None
    negatives = [str(x) for x in p.negative_prompt] if isinstance(p.negative_prompt, list) else None
    count = len(prompts) if prompts else len(negatives) if negatives else count
    prompts = prompts or [p.prompt] * count
    negatives = negatives or [p.negative_prompt] * count
    if len(prompts) != len(negatives):
        raise JobError(f"prompt: {len(prompts)} prompts and {len(negatives)} negative prompts")
    styles = p._generator.networks.styles if p._generator is not None else None
    if styles is not None:
        styled = [styles.apply(prompt, negative, p.styles) for prompt, negative in zip(prompts, negatives)]
        prompts, negatives = [pair[0] for pair in styled], [pair[1] for pair in styled]
    seeds = [int(x) for x in p.seed] if isinstance(p.seed, list) and p.seed else None
    subseeds = [int(x) for x in p.subseed] if isinstance(p.subseed, list) and p.subseed else None
    p.seed = noise.resolve_seed(seeds[0] if seeds else p.seed)
    p.subseed = noise.resolve_seed(subseeds[0] if subseeds else p.subseed)
    p.all_prompts, p.all_negative_prompts = prompts, negatives
    p.all_seeds = seeds or [p.seed + (index if p.subseed_strength == 0 else 0) for index in range(count)]
    p.all_subseeds = subseeds or [p.subseed + index for index in range(count)]
    return {name: list(getattr(p, name)) for name in _PER_IMAGE}


def _listed(p: StableDiffusionProcessing) -> set[str]:
    """The per-image lists `p` was given as lists (A1111 takes `prompt=[...]`, `seed=[...]`)."""
    given = {"all_prompts": p.prompt, "all_negative_prompts": p.negative_prompt, "all_seeds": p.seed,
             "all_subseeds": p.subseed}
    listed = {name for name, value in given.items() if isinstance(value, list) and value}
    return listed | ({"all_prompts", "all_negative_prompts"} if listed & {"all_prompts", "all_negative_prompts"}
                     else set())


def _chosen_by_scripts(p: StableDiffusionProcessing, as_set: dict[str, list], listed: set[str]) -> ImagePrompts:
    """The per-image lists given as lists or rewritten by a script (A1111's wildcards and dynamic prompts set
    `p.all_prompts` in `process()`) decide each image; a list left as set follows the request (and so a `p.prompt`
    or `p.seed` a script changed instead, as this web UI has always honoured)."""
    def chosen(name: str):
        value = getattr(p, name)
        value = list(value) if isinstance(value, (list, tuple)) else None
        return value if value and (value != as_set[name] or name in listed) else None

    return ImagePrompts(prompts=chosen("all_prompts"), negative_prompts=chosen("all_negative_prompts"),
                        seeds=chosen("all_seeds"), subseeds=chosen("all_subseeds"))


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Run `p` on the generation core, with the always-on scripts' hooks. Inside a job (a script's run(), a
    hook) it runs in that job; elsewhere (an extension's own route) it is queued like any request."""
    if p._generator is None:
        return _run_outside_job(p)
    return process_images_inner(p)   # looked up when called: extensions wrap it, as in A1111


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    """A1111's inner step of `process_images`: prompts and seeds, the scripts' hooks, the generation."""
    runner = p.scripts
    if runner is not None:
        runner.before_process(p)
    listed = _listed(p)
    as_set = _setup_prompts(p)
    if runner is not None:
        runner.process(p)
    chosen = _chosen_by_scripts(p, as_set, listed)
    request = p.to_request()
    p.sd_model = sd_models.WebuiSdModel(p._generator.load(request.checkpoint, remember=False))
    with p._generator.options.overridden(request.option_overrides):   # p.override_settings, for this call only
        # the live dict: what process_batch hooks add still reaches the infotext
        result = p._generator.generate(request, p._job, extra_params=p.extra_generation_params,
                                       hooks=ScriptHooks(p), chosen=chosen)
    processed = Processed.from_result(p, result)
    if runner is not None:
        runner.postprocess(p, processed)
    return processed


def get_fixed_seed(seed: int | None) -> int:
    """A1111's helper: -1 (or None) becomes a random seed."""
    return noise.resolve_seed(-1 if seed is None else int(seed))


def fix_seed(p: StableDiffusionProcessing) -> None:
    """A1111's helper: make p.seed and p.subseed concrete."""
    p.seed = get_fixed_seed(p.seed)
    p.subseed = get_fixed_seed(p.subseed)


def _run_outside_job(p: StableDiffusionProcessing) -> Processed:
    """`process_images(p)` on a `p` the job did not give (an extension's own route, or a new `p` made in a hook):
    inside a job it runs there and then; elsewhere it is queued like any request and waited for."""
    running = shared.services()
    if running.queue.on_worker():   # queuing from the worker would wait for itself forever
        return _run_in_job(running, p, running.queue.current)
    job = running.queue.submit("txt2img" if not p.init_images else "img2img",
                               lambda job: _run_in_job(running, p, job))
    job.done.wait()
    if job.state == "failed":
        raise job.error_kind(job.error or "generation failed")   # the job's kind of failure, not a new one
    return job.result


def _run_in_job(running, p: StableDiffusionProcessing, job: Job) -> Processed:
    p._generator, p._job = running.generator, job
    return process_images(p)


def joined(p: StableDiffusionProcessing, parts: list[Processed]) -> Processed:
    """One Processed from several runs of a script in the same job (Loopback's loops, SD upscale's batches):
    their images, with a grid in front when there is more than one and grids are saved, as A1111 returns."""
    from modules import images

    first = parts[0]
    pictures = [image for part in parts for image in part.images[part.index_of_first_image:]]
    texts = [text for part in parts for text in part.infotexts[part.index_of_first_image:]]
    seeds = [seed for part in parts for seed in part.all_seeds]
    subseeds = [seed for part in parts for seed in part.all_subseeds]
    saved = [path for part in parts for path in part.saved]
    index = 0
    if len(pictures) > 1 and not p.do_not_save_grid and shared.opts.grid_save:
        grid = images.make_grid(pictures)
        outdir = "outdir_img2img_grids" if p.is_img2img else "outdir_txt2img_grids"
        saved.append(str(p._generator.save(grid, outdir, seeds[0], texts[0], grid=True, p=p)))
        grid.info["parameters"] = texts[0]
        pictures.insert(0, grid)
        texts.insert(0, texts[0])
        index = 1
    info = json.loads(first.info) if first.info.startswith("{") else {}
    info.update(all_seeds=seeds, all_subseeds=subseeds, infotexts=texts, index_of_first_image=index)
    processed = Processed(p, pictures, seed=first.seed, info=json.dumps(info, ensure_ascii=False, default=str),
                          subseed=first.subseed, all_seeds=seeds, all_subseeds=subseeds, index_of_first_image=index,
                          infotexts=texts)
    processed.saved = saved
    processed.warnings = list(dict.fromkeys(warning for part in parts for warning in part.warnings))
    return processed


def create_infotext(p: StableDiffusionProcessing, all_prompts: list | None = None, all_seeds: list | None = None,
                    all_subseeds: list | None = None, comments=None, iteration: int = 0, position_in_batch: int = 0,
                    use_main_prompt: bool = False, index: int | None = None,
                    all_negative_prompts: list | None = None) -> str:
    """A1111's create_infotext for one image of `p` (extensions write it into images they make themselves): the
    generation's main parameters and `p.extra_generation_params`, in A1111's infotext layout."""
    from modules.output import infotext

    index = position_in_batch + iteration * p.batch_size if index is None else index

    def pick(values, default):
        values = list(values or [])
        return values[index] if 0 <= index < len(values) else default

    prompt = p.prompt if use_main_prompt else pick(all_prompts or p.all_prompts, p.prompt)
    negative = pick(all_negative_prompts or p.all_negative_prompts, p.negative_prompt)
    variation = p.subseed_strength > 0
    model = getattr(p.sd_model, "info", None)
    params = {"Steps": p.steps, "Sampler": p.sampler_name, "Schedule type": p.scheduler, "CFG scale": p.cfg_scale,
              "Seed": pick(all_seeds or p.all_seeds, p.seed), "Size": f"{p.width}x{p.height}",
              "Model hash": getattr(model, "shorthash", None), "Model": getattr(model, "stem", None),
              "Variation seed": pick(all_subseeds or p.all_subseeds, p.subseed) if variation else None,
              "Variation seed strength": p.subseed_strength if variation else None,
              "Denoising strength": p.denoising_strength if p.is_img2img or p.enable_hr else None}
    extra = {key: value(p) if callable(value) else value for key, value in p.extra_generation_params.items()}
    return infotext.create_infotext(str(prompt), str(negative), params, extra)


def create_random_tensors(shape, seeds: list[int], subseeds: list[int] | None = None, subseed_strength: float = 0.0,
                          seed_resize_from_h: int = 0, seed_resize_from_w: int = 0, p=None):
    """A1111's: the initial noise for `seeds` (one [C, H, W] each), as this web UI draws it for those seeds."""
    from modules import devices
    from modules.diffusion import rng

    resize_from = (seed_resize_from_h, seed_resize_from_w) if seed_resize_from_h > 0 and seed_resize_from_w > 0 \
        else None
    return rng.ImageRNG(tuple(shape), list(seeds), subseeds=list(subseeds) if subseeds else None,
                        subseed_strength=subseed_strength, resize_from=resize_from,
                        source=str(shared.opts.randn_source), device=devices.device).next()


def create_binary_mask(image: Image.Image, round: bool = True) -> Image.Image:
    """A1111's: an RGBA image's alpha as the mask (rounded to black and white), else the image in grayscale."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        alpha = image.split()[-1].convert("L")
        return alpha.point(lambda x: 255 if x > 128 else 0) if round else alpha
    return image.convert("L")


def __getattr__(name: str):
    from modules.addons.missing_names import missing_name

    raise missing_name("modules.processing", name)
