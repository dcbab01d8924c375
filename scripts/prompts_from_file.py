"""Prompts from file or textbox (A1111's scripts/prompts_from_file.py): one generation per line.

A line is a prompt, or A1111's command-line style options: `--prompt "a cat" --negative_prompt "blurry"
--steps 10 --sampler_name "Euler a" --sd_model other.safetensors`. Every line is read and checked before the
first image, so a typo in line 7 fails at once, naming the line.
"""
from __future__ import annotations

import copy
import json
import shlex

from modules import scripts
from modules.diffusion import noise, samplers
from modules.jobs import JobError
from modules.processing import Processed, process_images

TITLE = "Prompts from file or textbox"


def _int(text: str) -> int:
    return int(text)


def _float(text: str) -> float:
    return float(text)


def _text(text: str) -> str:
    return text


def _boolean(text: str) -> bool:
    return text.lower() == "true"


def _styles(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _sampler_index(text: str) -> str:
    names = samplers.sampler_names()
    index = int(text)
    if not 0 <= index < len(names):
        raise ValueError(f"sampler index {index} is out of range (0-{len(names) - 1})")
    return names[index]


# A1111's prompt_tags: option → how its value is read ("sd_model" becomes the request's checkpoint)
PROMPT_TAGS = {
    "sd_model": _text,
    "outpath_samples": _text,
    "outpath_grids": _text,
    "prompt_for_display": _text,
    "prompt": _text,
    "negative_prompt": _text,
    "styles": _styles,
    "seed": _int,
    "subseed_strength": _float,
    "subseed": _int,
    "seed_resize_from_h": _int,
    "seed_resize_from_w": _int,
    "sampler_index": _sampler_index,
    "sampler_name": _text,
    "batch_size": _int,
    "n_iter": _int,
    "steps": _int,
    "cfg_scale": _float,
    "width": _int,
    "height": _int,
    "restore_faces": _boolean,
    "tiling": _boolean,
    "do_not_save_samples": _boolean,
    "do_not_save_grid": _boolean,
}
# A1111 options this backend cannot honour: refused rather than silently ignored
REFUSED = {
    "outpath_samples": "output folders are set in Settings (outdir_txt2img_samples, ...)",
    "outpath_grids": "output folders are set in Settings (outdir_txt2img_grids, ...)",
}


def cmdargs(line: str) -> dict:
    """`--key value ...` → {key: value}; --prompt and --negative_prompt take every word up to the next option.
    ValueError says what is wrong."""
    try:
        args = shlex.split(line)
    except ValueError as error:     # an unclosed quote
        raise ValueError(str(error)) from None
    result: dict = {}
    position = 0
    while position < len(args):
        arg = args[position]
        if not arg.startswith("--"):
            raise ValueError(f"expected an option starting with \"--\", got {arg!r}")
        tag = arg[2:]
        if position + 1 >= len(args):
            raise ValueError(f"missing value for {arg}")
        if tag in ("prompt", "negative_prompt"):
            position += 1
            words = [args[position]]
            position += 1
            while position < len(args) and not args[position].startswith("--"):
                words.append(args[position])
                position += 1
            result[tag] = " ".join(words)
            continue
        read = PROMPT_TAGS.get(tag)
        if read is None:
            raise ValueError(f"unknown option {arg}; known ones are {', '.join('--' + key for key in PROMPT_TAGS)}")
        if tag in REFUSED:
            raise ValueError(f"{arg} is not supported: {REFUSED[tag]}")
        value = args[position + 1]
        try:
            result[tag] = read(value)
        except ValueError as error:
            raise ValueError(f"{arg} {value!r}: {error}") from None
        position += 2
    return result


def parse_line(line: str) -> dict:
    """A line's settings. A1111 treats a line as options when it holds "--"; one that does not start with
    an option is a plain prompt there too (its parse fails and it falls back), so only those that do are
    read as options here, and their mistakes are errors rather than prompts."""
    return cmdargs(line) if line.startswith("--") else {"prompt": line}


class Script(scripts.Script):
    def title(self):
        return TITLE

    def ui(self, is_img2img):
        import gradio as gr

        from modules.ui.common import PRIVATE

        checkbox_iterate = gr.Checkbox(label="Iterate seed every line", value=False,
                                       elem_id=self.elem_id("checkbox_iterate"))
        checkbox_iterate_batch = gr.Checkbox(label="Use same random seed for all lines", value=False,
                                             elem_id=self.elem_id("checkbox_iterate_batch"))
        prompt_position = gr.Radio(["start", "end"], label="Insert prompts at the", value="start",
                                   elem_id=self.elem_id("prompt_position"))
        prompt_txt = gr.Textbox(label="List of prompt inputs", lines=2, elem_id=self.elem_id("prompt_txt"))
        upload = gr.File(label="Upload prompt inputs", type="binary", elem_id=self.elem_id("file"))

        def load_file(data):
            if data is None:
                return None, gr.update()
            lines = [line.strip() for line in data.decode("utf8", errors="ignore").split("\n")]
            return None, gr.update(value="\n".join(lines), lines=7)

        upload.change(load_file, inputs=[upload], outputs=[upload, prompt_txt], show_progress="hidden",
                      api_visibility=PRIVATE)
        prompt_txt.change(lambda text: gr.update(lines=7 if "\n" in (text or "") else 2), inputs=[prompt_txt],
                          outputs=[prompt_txt], show_progress="hidden", queue=False, api_visibility=PRIVATE)
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]

    def run(self, p, checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt):
        if prompt_position not in ("start", "end"):
            raise JobError(f"{TITLE}: unknown prompt position {prompt_position!r}; choose start or end")
        lines = [(number, line.strip()) for number, line in enumerate(str(prompt_txt or "").splitlines(), start=1)
                 if line.strip()]
        if not lines:
            raise JobError(f"{TITLE}: the list of prompt inputs is empty")
        p.do_not_save_grid = True
        if checkbox_iterate or checkbox_iterate_batch:
            p.seed = noise.resolve_seed(p.seed)

        jobs = []
        for number, line in lines:
            try:
                jobs.append((number, line, parse_line(line)))
            except ValueError as error:
                raise JobError(f"{TITLE}: line {number} ({line!r}): {error}") from None
        for number, line, args in jobs:     # every line valid before the first image
            try:
                _line_p(p, args, prompt_position).to_request()
            except JobError as error:
                raise JobError(f"{TITLE}: line {number} ({line!r}): {error}") from None

        job = p._job
        results = []
        job.image_count = sum(int(args.get("n_iter", p.n_iter)) for _, _, args in jobs)   # every line's batches
        for index, (number, line, args) in enumerate(jobs, start=1):
            if job.interrupted:
                break
            job.textinfo = f"{TITLE}: line {index} of {len(jobs)}"
            results.append(process_images(_line_p(p, args, prompt_position)))
            if checkbox_iterate:
                p.seed = p.seed + p.batch_size * p.n_iter
        made = [result for result in results if result.images]
        if not made:
            return Processed(p, [])
        images = [image for result in made for image in result.images]
        infotexts = [text for result in made for text in result.infotexts]
        all_prompts = [prompt for result in made for prompt in result.all_prompts]
        all_seeds = [seed for result in made for seed in result.all_seeds]
        all_subseeds = [seed for result in made for seed in result.all_subseeds]
        first = made[0]
        info = json.loads(first.info) if first.info.startswith("{") else {}
        info.update(all_prompts=all_prompts, all_seeds=all_seeds, all_subseeds=all_subseeds, infotexts=infotexts,
                    index_of_first_image=0)
        processed = Processed(p, images, seed=first.seed, info=json.dumps(info, ensure_ascii=False, default=str),
                              subseed=first.subseed, all_prompts=all_prompts, all_seeds=all_seeds,
                              all_subseeds=all_subseeds, infotexts=infotexts)
        processed.saved = [path for result in made for path in result.saved]
        processed.warnings = list(dict.fromkeys(w for result in made for w in result.warnings))
        return processed


def _line_p(p, args: dict, prompt_position: str):
    """The `p` of one line: the tab's settings with the line's over them."""
    line_p = copy.copy(p)   # its lists and dicts are copies too
    for key, value in args.items():
        if key == "sd_model":
            line_p.override_settings["sd_model_checkpoint"] = value
        else:
            setattr(line_p, key, value)
    if args.get("prompt") and p.prompt:
        line_p.prompt = (f"{args['prompt']} {p.prompt}" if prompt_position == "start"
                         else f"{p.prompt} {args['prompt']}")
    if args.get("negative_prompt") and p.negative_prompt:
        line_p.negative_prompt = (f"{args['negative_prompt']} {p.negative_prompt}" if prompt_position == "start"
                                  else f"{p.negative_prompt} {args['negative_prompt']}")
    return line_p
