"""SD upscale (A1111's scripts/sd_upscale.py): upscale the picture, then img2img it tile by tile at the request's
size and blend the tiles back together."""
from __future__ import annotations

import copy

from modules import masking, processing, scripts, shared
from modules.addons import arguments
from modules.jobs import Interrupted, JobError

TITLE = "SD upscale"
MAX_PIXELS = 4096 * 4096


def _upscaler_name(value, upscalers) -> str:
    """A1111 sends the upscaler's index in its list; a name is taken too. Latent upscalers cannot upscale pixels."""
    names = upscalers.names()
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(names):
            raise JobError(f"{TITLE}: upscaler index {value} is out of range (0-{len(names) - 1})")
        value = names[value]
    found = upscalers.find(str(value))
    if found is None or upscalers.is_latent(found):
        raise JobError(f"{TITLE}: unknown upscaler {value!r}; choose one of {names}")
    return found


class Script(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        import gradio as gr

        from modules.ui.common import slider

        info = gr.HTML("<p>Will upscale the image by the selected scale factor; use width and height sliders to set "
                       "tile size</p>", js_on_load=None)
        overlap = slider(0, 256, value=64, step=16, precision=0, label="Tile overlap", elem_id=self.elem_id("overlap"))
        scale_factor = slider(1.0, 4.0, value=2.0, step=0.05, label="Scale Factor",
                              elem_id=self.elem_id("scale_factor"))
        upscaler_index = gr.Radio(shared.services().upscalers.names(), value="None", type="index", label="Upscaler",
                                  elem_id=self.elem_id("upscaler_index"))
        return [info, overlap, upscaler_index, scale_factor]

    def run(self, p, _, overlap, upscaler_index, scale_factor):
        overlap = arguments.number(TITLE, "overlap", overlap, int, 0, 256)
        scale_factor = arguments.number(TITLE, "scale_factor", scale_factor, float, 1.0, 4.0)
        upscalers = p._generator.upscalers
        upscaler = _upscaler_name(upscaler_index, upscalers)
        processing.fix_seed(p)
        job = p._job
        source = masking.flatten(p.init_images[0], shared.opts.img2img_background_color)
        target = (round(source.width * scale_factor), round(source.height * scale_factor))
        if target[0] * target[1] > MAX_PIXELS:
            raise JobError(f"SD upscale to {target[0]}x{target[1]} is over the 16 megapixel limit")
        job.textinfo = "Upscaling"
        upscaled = masking.resize_image(0, upscalers.upscale(source, scale_factor, upscaler, job=job), *target)
        extra = {"SD upscale overlap": overlap, "SD upscale upscaler": upscaler}
        parts = []
        for batch in range(p.n_iter):
            try:
                tiles = masking.split_tiles(upscaled, p.width, p.height, overlap)
            except ValueError as error:
                raise JobError(f"{TITLE}: overlap: {error}") from None
            pieces = list(tiles)
            job.image_count = p.n_iter * len(pieces)   # the progress bar covers every tile
            first = None
            for index, tile in enumerate(pieces):
                if job.interrupted:
                    raise Interrupted("interrupted")
                job.textinfo = f"Tile {index + 1} of {len(pieces)}"
                cell = copy.copy(p)
                cell.init_images, cell.n_iter, cell.batch_size, cell.mask, cell.resize_mode = [tile.image], 1, 1, None, 0
                cell.do_not_save_samples = cell.do_not_save_grid = True
                cell.seed = p.seed + batch
                cell.extra_generation_params = {**p.extra_generation_params, **extra}
                processed = processing.process_images(cell)
                tile.image = processed.images[0]
                first = first or processed
            combined = masking.combine_tiles(tiles)
            text = first.infotexts[0]
            combined.info["parameters"] = text
            first.saved = []
            if not p.do_not_save_samples and shared.opts.samples_save:
                first.saved = [str(p._generator.save(combined, "outdir_img2img_samples", p.seed + batch, text, p=p))]
            first.images, first.infotexts, first.index_of_first_image = [combined], [text], 0
            parts.append(first)
        return processing.joined(p, parts)
