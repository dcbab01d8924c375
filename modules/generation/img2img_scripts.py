"""A1111's img2img scripts: Loopback, Poor man's outpainting, Outpainting mk2 and SD upscale.

Each one is a loop around the generation core: it builds ordinary img2img requests, runs them with
`Generator.generate` in the same job, and gathers the images into one result. Arguments are given by name
(`script_args`); the API maps A1111's positional `script_args` onto these names.
"""
from __future__ import annotations

import math
from typing import Any

from modules import images, masking
from modules.diffusion import noise
from modules.jobs import Job, JobError

DIRECTIONS = ("left", "right", "up", "down")

# name → {argument: (default, check)}; check(value) returns the value or raises ValueError
SCRIPTS: dict[str, dict[str, Any]] = {
    "Loopback": {"loops": 4, "final_denoising_strength": 0.5, "denoising_curve": "Linear"},
    "Poor man's outpainting": {"pixels": 128, "mask_blur": 4, "inpainting_fill": 1, "direction": list(DIRECTIONS)},
    "Outpainting mk2": {"pixels": 128, "mask_blur": 8, "direction": list(DIRECTIONS), "noise_q": 1.0,
                        "color_variation": 0.05},
    "SD upscale": {"overlap": 64, "scale_factor": 2.0, "upscaler": "None"},
}
# A1111's positional script_args for each script (its `run()` parameters after `p`).
POSITIONAL = {
    "Loopback": ("loops", "final_denoising_strength", "denoising_curve", None),   # None: append_interrogation
    "Poor man's outpainting": ("pixels", "mask_blur", "inpainting_fill", "direction"),
    "Outpainting mk2": (None, "pixels", "mask_blur", "direction", "noise_q", "color_variation"),   # None: info
    "SD upscale": (None, "overlap", "upscaler", "scale_factor"),
}
CURVES = ("Aggressive", "Linear", "Lazy")


def find(name: str | None) -> str | None:
    """The script's canonical name (A1111 matches titles case-insensitively), or None."""
    if not name:
        return None
    return next((known for known in SCRIPTS if known.lower() == name.strip().lower()), None)


def _number(args: dict, key: str, kind, low, high):
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise ValueError(f"script_args.{key}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"script_args.{key}: must be between {low} and {high} (got {value})")
    return kind(value)


def check_args(name: str, given: dict, upscalers=None) -> dict:
    """Defaults filled in and every value checked; ValueError names the argument."""
    unknown = set(given) - set(SCRIPTS[name])
    if unknown:
        raise ValueError(f"script_args: {name} has no argument(s) {sorted(unknown)}; it takes {list(SCRIPTS[name])}")
    args = {**SCRIPTS[name], **given}
    if name == "Loopback":
        args["loops"] = _number(args, "loops", int, 1, 32)
        args["final_denoising_strength"] = _number(args, "final_denoising_strength", float, 0.0, 1.0)
        if args["denoising_curve"] not in CURVES:
            raise ValueError(f"script_args.denoising_curve: one of {list(CURVES)}")
    elif name in ("Poor man's outpainting", "Outpainting mk2"):
        args["pixels"] = _number(args, "pixels", int, 8, 256)
        args["mask_blur"] = _number(args, "mask_blur", int, 0, 64)
        if name == "Poor man's outpainting":
            args["inpainting_fill"] = _number(args, "inpainting_fill", int, 0, 3)
        else:
            args["noise_q"] = _number(args, "noise_q", float, 0.0, 4.0)
            args["color_variation"] = _number(args, "color_variation", float, 0.0, 1.0)
        direction = args["direction"]
        direction = [direction] if isinstance(direction, str) else direction
        if not isinstance(direction, list) or not direction or any(d not in DIRECTIONS for d in direction):
            raise ValueError(f"script_args.direction: a list of {list(DIRECTIONS)}")
        args["direction"] = [d for d in DIRECTIONS if d in direction]
    else:
        args["overlap"] = _number(args, "overlap", int, 0, 256)
        args["scale_factor"] = _number(args, "scale_factor", float, 1.0, 4.0)
        if upscalers is not None:
            found = upscalers.find(str(args["upscaler"]))
            if found is None or upscalers.is_latent(found):
                raise ValueError(f"script_args.upscaler: unknown upscaler {args['upscaler']!r}; "
                                 f"choose one of {upscalers.names()}")
            args["upscaler"] = found
    return args


def positional_args(name: str, values: list, upscaler_names: list[str]) -> dict:
    """A1111's positional `script_args` → our named ones (extra trailing values are ignored, as A1111 does)."""
    named = {key: value for key, value in zip(POSITIONAL[name], values) if key is not None}
    index = named.get("upscaler")
    if name == "SD upscale" and isinstance(index, int) and not isinstance(index, bool):
        if not 0 <= index < len(upscaler_names):   # A1111 sends the upscaler's index in its list
            raise ValueError(f"script_args: upscaler index {index} is out of range (0-{len(upscaler_names) - 1})")
        named["upscaler"] = upscaler_names[index]
    return named


def run(generator, request, job: Job):
    name = find(request.script_name)
    if name is None:
        raise JobError(f"script_name: unknown script {request.script_name!r}; one of {list(SCRIPTS)}", status=422)
    try:
        args = check_args(name, request.script_args, generator.upscalers)
    except ValueError as error:
        raise JobError(str(error), status=422) from None
    base = request.model_copy(update={"script_name": None, "script_args": {},
                                      "seed": noise.resolve_seed(request.seed),
                                      "subseed": noise.resolve_seed(request.subseed)})
    if name == "Loopback":
        return _loopback(generator, base, job, args)
    if name == "SD upscale":
        return _sd_upscale(generator, base, job, args)
    return _outpaint(generator, base, job, args, mk2=name == "Outpainting mk2")


def _gathered(generator, request, results: list):
    """One result from several runs; a grid of them when there is more than one image, as A1111 returns."""
    first = results[0]
    pictures = [image for result in results for image in result.images[result.index_of_first_image:]]
    texts = [text for result in results for text in result.infotexts[result.index_of_first_image:]]
    first.images, first.infotexts = pictures, texts
    first.seeds = [seed for result in results for seed in result.seeds]
    first.subseeds = [seed for result in results for seed in result.subseeds]
    first.saved = [path for result in results for path in result.saved]
    first.request = request
    first.index_of_first_image = 0
    if len(pictures) > 1 and request.save_grid and generator.options.grid_save:
        grid = images.make_grid(pictures)
        first.saved.append(str(generator.save(grid, "outdir_img2img_grids", first.seeds[0], texts[0], grid=True)))
        grid.info["parameters"] = texts[0]
        first.images.insert(0, grid)
        first.infotexts.insert(0, texts[0])
        first.index_of_first_image = 1
    first.info.update(all_seeds=first.seeds, all_subseeds=first.subseeds, infotexts=first.infotexts,
                      index_of_first_image=first.index_of_first_image)
    return first


def _loopback(generator, request, job: Job, args: dict):
    """Each loop's output is the next loop's input; the strength moves to the final one along a curve (A1111)."""
    loops, start, final = args["loops"], request.denoising_strength, args["final_denoising_strength"]

    def strength(loop: int) -> float:
        if loops == 1:
            return start
        progress = loop / (loops - 1)
        shape = {"Aggressive": math.sin(progress * math.pi / 2), "Lazy": 1 - math.cos(progress * math.pi / 2),
                 "Linear": progress}[args["denoising_curve"]]
        return start + (final - start) * shape

    results = []
    job.image_count = request.n_iter * loops   # the progress bar covers every loop
    for batch in range(request.n_iter):
        current = list(request.init_images)
        for loop in range(loops):
            if job.interrupted:
                break
            job.textinfo = f"Loop {loop + 1} of {loops}"
            step = request.model_copy(update={
                "init_images": current, "n_iter": 1, "denoising_strength": strength(loop), "save_grid": False,
                "seed": request.seed + batch * loops * request.batch_size + loop * request.batch_size})
            result = generator.generate(step, job)
            results.append(result)
            current = result.images[result.index_of_first_image:]
    if not results:
        raise JobError("interrupted before the first loop", status=409)
    return _gathered(generator, request, results)


def _outpaint(generator, request, job: Job, args: dict, *, mk2: bool):
    """Extend the canvas in the chosen directions and inpaint the new border (with a little overlap)."""
    source = masking.flatten(request.init_images[0], generator.options.img2img_background_color)
    sides = {side: args["pixels"] if side in args["direction"] else 0 for side in DIRECTIONS}
    canvas, mask = masking.expand_canvas(source, **sides, fill_mode="noise" if mk2 else "edge", seed=request.seed,
                                         overlap=max(args["mask_blur"] * 2, 8))
    width, height = canvas.width // 8 * 8, canvas.height // 8 * 8
    if width * height > 2048 * 2048:
        raise JobError(f"the outpainted picture would be {canvas.width}x{canvas.height}, over the 4 megapixel "
                       "limit: use fewer pixels or directions, or a smaller image", status=422)
    if (width, height) != canvas.size:
        canvas, mask = canvas.crop((0, 0, width, height)), mask.crop((0, 0, width, height))
    step = request.model_copy(update={
        "init_images": [canvas], "mask": mask, "mask_blur": args["mask_blur"], "width": width, "height": height,
        "inpainting_fill": args.get("inpainting_fill", 1), "inpaint_full_res": False, "inpainting_mask_invert": 0,
        "resize_mode": 0})
    return generator.generate(step, job)


def _sd_upscale(generator, request, job: Job, args: dict):
    """Upscale, then img2img the picture tile by tile at the model's size and blend the tiles (A1111)."""
    source = masking.flatten(request.init_images[0], generator.options.img2img_background_color)
    target = (round(source.width * args["scale_factor"]), round(source.height * args["scale_factor"]))
    if target[0] * target[1] > 4096 * 4096:
        raise JobError(f"SD upscale to {target[0]}x{target[1]} is over the 16 megapixel limit", status=422)
    job.textinfo = "Upscaling"
    upscaled = generator.upscalers.upscale(source, args["scale_factor"], args["upscaler"], job=job)
    upscaled = masking.resize_image(0, upscaled, *target)
    extra = {"SD upscale overlap": args["overlap"], "SD upscale upscaler": args["upscaler"]}
    outputs = []
    for batch in range(request.n_iter):
        try:
            tiles = masking.split_tiles(upscaled, request.width, request.height, args["overlap"])
        except ValueError as error:
            raise JobError(f"script_args.overlap: {error}", status=422) from None
        pieces = list(tiles)
        job.image_count = request.n_iter * len(pieces)   # the progress bar covers every tile
        first_result = None
        for index, tile in enumerate(pieces):
            if job.interrupted:
                raise JobError("interrupted", status=409)
            job.textinfo = f"Tile {index + 1} of {len(pieces)}"
            step = request.model_copy(update={
                "init_images": [tile.image], "n_iter": 1, "batch_size": 1, "save_images": False, "save_grid": False,
                "seed": request.seed + batch, "mask": None, "resize_mode": 0})
            result = generator.generate(step, job, extra_params=extra)
            tile.image = result.images[0]
            first_result = first_result or result
        combined = masking.combine_tiles(tiles)
        text = first_result.infotexts[0]
        combined.info["parameters"] = text
        if request.save_images and generator.options.samples_save:
            first_result.saved = [str(generator.save(combined, "outdir_img2img_samples", request.seed + batch, text))]
        first_result.images, first_result.infotexts = [combined], [text]
        outputs.append(first_result)
    return _gathered(generator, request, outputs)

