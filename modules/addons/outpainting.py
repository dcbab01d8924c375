"""What both outpainting scripts do (scripts/poor_mans_outpainting.py, scripts/outpainting_mk_2.py): extend the
canvas in the chosen directions and inpaint the new border, with a little overlap."""
from __future__ import annotations

import copy

from modules import masking, processing, shared
from modules.addons import arguments
from modules.jobs import JobError

DIRECTIONS = ("left", "right", "up", "down")
MAX_PIXELS = 2048 * 2048


def outpaint(title: str, p, pixels, mask_blur, direction, *, fill_mode: str, inpainting_fill: int = 1):
    pixels = arguments.number(title, "pixels", pixels, int, 8, 256)
    mask_blur = arguments.number(title, "mask_blur", mask_blur, int, 0, 64)
    direction = arguments.subset(title, "direction", direction, DIRECTIONS)
    processing.fix_seed(p)
    source = masking.flatten(p.init_images[0], shared.opts.img2img_background_color)
    sides = {side: pixels if side in direction else 0 for side in DIRECTIONS}
    canvas, mask = masking.expand_canvas(source, **sides, fill_mode=fill_mode, seed=p.seed,
                                         overlap=max(mask_blur * 2, 8))
    width, height = canvas.width // 8 * 8, canvas.height // 8 * 8
    if width * height > MAX_PIXELS:
        raise JobError(f"the outpainted picture would be {canvas.width}x{canvas.height}, over the 4 megapixel "
                       "limit: use fewer pixels or directions, or a smaller image")
    if (width, height) != canvas.size:
        canvas, mask = canvas.crop((0, 0, width, height)), mask.crop((0, 0, width, height))
    cell = copy.copy(p)
    cell.init_images, cell.mask, cell.mask_blur, cell.width, cell.height = [canvas], mask, mask_blur, width, height
    cell.inpainting_fill, cell.inpaint_full_res, cell.inpainting_mask_invert, cell.resize_mode = (
        inpainting_fill, False, 0, 0)
    return processing.process_images(cell)

