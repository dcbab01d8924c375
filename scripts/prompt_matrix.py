"""Prompt matrix (A1111's scripts/prompt_matrix.py): "a cat|in a hat|on a mat" makes one image for every
combination of the parts after the first (2^n images), drawn as a labelled grid whose labels show which parts
each image has.
"""
from __future__ import annotations

import copy
import json

from modules import scripts
from modules.output import grids
from modules.diffusion import noise
from modules.jobs import JobError
from modules.processing import Processed, process_images

TITLE = "Prompt matrix"
MAX_VARIABLE_PARTS = 12     # 4096 images


class Script(scripts.Script):
    def title(self):
        return TITLE

    def ui(self, is_img2img):
        import gradio as gr

        from modules.ui.common import slider

        gr.HTML("<br />")
        with gr.Row():
            with gr.Column():
                put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                           elem_id=self.elem_id("put_at_start"))
                different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                              elem_id=self.elem_id("different_seeds"))
            with gr.Column():
                prompt_type = gr.Radio(["positive", "negative"], label="Select prompt", value="positive",
                                       elem_id=self.elem_id("prompt_type"))
                variations_delimiter = gr.Radio(["comma", "space"], label="Select joining char", value="comma",
                                                elem_id=self.elem_id("variations_delimiter"))
            with gr.Column():
                margin_size = slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                     elem_id=self.elem_id("margin_size"))
        return [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]

    def run(self, p, put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size):
        if prompt_type not in ("positive", "negative"):
            raise JobError(f"{TITLE}: unknown prompt type {prompt_type!r}; choose positive or negative")
        if variations_delimiter not in ("comma", "space"):
            raise JobError(f"{TITLE}: unknown joining char {variations_delimiter!r}; choose comma or space")
        p.seed = noise.resolve_seed(p.seed)
        p.subseed = noise.resolve_seed(p.subseed)
        original = p.prompt if prompt_type == "positive" else p.negative_prompt
        parts = original.split("|")
        if len(parts) - 1 > MAX_VARIABLE_PARTS:
            raise JobError(f"{TITLE}: {len(parts) - 1} variable parts would make {2 ** (len(parts) - 1)} images; "
                           f"at most {MAX_VARIABLE_PARTS} parts")
        delimiter = ", " if variations_delimiter == "comma" else " "
        prompts = []
        for combination in range(2 ** (len(parts) - 1)):
            chosen = [text.strip().strip(",") for n, text in enumerate(parts[1:]) if combination & (1 << n)]
            chosen = [*chosen, parts[0]] if put_at_start else [parts[0], *chosen]
            prompts.append(delimiter.join(chosen))

        megapixels = len(prompts) * p.width * p.height / 1_000_000
        if megapixels > grids.MAX_GRID_MEGAPIXELS:
            raise JobError(f"{TITLE}: {len(prompts)} images of {p.width}x{p.height} would make a "
                           f"{megapixels:.0f} megapixel grid, over the {grids.MAX_GRID_MEGAPIXELS} megapixel "
                           "limit; use fewer | parts or a smaller size")
        cells = []
        for index, prompt in enumerate(prompts):
            cell = copy.copy(p)
            cell.batch_size = cell.n_iter = 1      # one image per combination, placed by its index
            if prompt_type == "positive":
                cell.prompt = prompt
            else:
                cell.negative_prompt = prompt
            cell.seed = p.seed + (index if different_seeds else 0)
            try:
                cell.to_request()
            except JobError as error:
                raise JobError(f"{TITLE}: {prompt!r}: {error}") from None
            cells.append(cell)

        job = p._job
        job.image_count = len(cells)   # the progress bar covers every image (each cell is one batch)
        results = []
        for index, cell in enumerate(cells, start=1):
            if job.interrupted:
                break
            job.textinfo = f"{TITLE}: image {index} of {len(cells)}"
            results.append(process_images(cell))
        pictures = [result.images[0] for result in results if result.images]
        if not pictures:
            return Processed(p, [])
        infotexts = [result.infotexts[0] for result in results if result.images]
        if len(pictures) < len(prompts):    # interrupted: the cells not made stay black
            blank = pictures[0].copy()
            blank.paste((0, 0, 0), (0, 0, *blank.size))
            pictures += [blank] * (len(prompts) - len(pictures))

        rows = 1 << ((len(parts) - 1) // 2)
        grid = grids.image_grid(pictures, rows=rows)
        width, height = grid.width // (len(prompts) // rows), grid.height // rows
        grid = grids.draw_prompt_matrix(grid, width, height, parts, int(margin_size or 0))
        first = results[0]
        text = first.infotexts[0]
        grid.info["parameters"] = text
        saved = [path for result in results for path in result.saved]
        if not p.do_not_save_grid and p._generator.options.grid_save:
            outdir = "outdir_img2img_grids" if p.is_img2img else "outdir_txt2img_grids"
            saved.append(str(p._generator.save(grid, outdir, first.seed, text, grid=True, p=p)))

        made = [result for result in results if result.images]
        all_prompts = [first.prompt] + [result.prompt for result in made]
        all_seeds = [first.seed] + [result.seed for result in made]
        all_subseeds = [first.subseed] + [result.subseed for result in made]
        images = [grid] + [result.images[0] for result in made]
        texts = [text, *infotexts]
        info = json.loads(first.info) if first.info.startswith("{") else {}
        info.update(all_prompts=all_prompts, all_seeds=all_seeds, all_subseeds=all_subseeds, infotexts=texts,
                    index_of_first_image=1)
        processed = Processed(p, images, seed=first.seed, info=json.dumps(info, ensure_ascii=False, default=str),
                              subseed=first.subseed, all_prompts=all_prompts, all_seeds=all_seeds,
                              all_subseeds=all_subseeds, index_of_first_image=1, infotexts=texts)
        processed.saved = saved
        processed.warnings = list(dict.fromkeys(w for result in results for w in result.warnings))
        return processed
