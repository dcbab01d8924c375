"""Preparing pictures and masks for img2img, inpainting, outpainting and SD upscale."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from modules import masking

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def stripes(size, colours, vertical=True):
    """Equal bands of colour, left to right (or top to bottom)."""
    image = Image.new("RGB", size)
    w, h = size
    n = len(colours)
    for i, colour in enumerate(colours):
        box = (w * i // n, 0, w * (i + 1) // n, h) if vertical else (0, h * i // n, w, h * (i + 1) // n)
        image.paste(colour, box)
    return image


def noise(size, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def rect_mask(size, box):
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def pixels(image):
    return np.asarray(image).astype(int)


def close(actual, expected, tolerance=12):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


# ---------------------------------------------------------------- resize_image

@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("source, target", [((300, 100), (64, 64)), ((100, 300), (64, 48)), ((65, 33), (97, 31)),
                                            ((1000, 1), (8, 8)), ((1, 1000), (16, 8)), ((64, 64), (64, 64))])
def test_every_mode_gives_exactly_the_size(mode, source, target):
    result = masking.resize_image(mode, noise(source), *target)
    assert result.size == target and result.mode == "RGB"


def test_just_resize_stretches_everything_in():
    result = masking.resize_image(0, stripes((300, 100), [RED, GREEN, BLUE]), 60, 60)
    assert close(result.getpixel((5, 30)), RED) and close(result.getpixel((30, 30)), GREEN)
    assert close(result.getpixel((55, 30)), BLUE)
    assert np.array_equal(pixels(masking.resize_image(3, noise((50, 40)), 32, 32)),
                          pixels(masking.resize_image(0, noise((50, 40)), 32, 32)))


def test_crop_and_resize_keeps_the_centre_of_a_wide_picture():
    result = masking.resize_image(1, stripes((300, 100), [RED, GREEN, BLUE]), 64, 64)
    for x in (1, 32, 62):
        for y in (1, 62):
            assert close(result.getpixel((x, y)), GREEN), (x, y)


def test_crop_and_resize_keeps_the_centre_of_a_tall_picture():
    result = masking.resize_image(1, stripes((100, 300), [RED, GREEN, BLUE], vertical=False), 64, 32)
    assert all(close(result.getpixel((x, y)), GREEN) for x in (1, 62) for y in (1, 30))


def test_resize_and_fill_keeps_the_whole_wide_picture_and_stretches_its_edges():
    source = stripes((200, 100), [RED, BLUE])  # fits as 64x32, bands of 16 rows above and below
    result = masking.resize_image(2, source, 64, 64)
    for y in (0, 8, 24, 40, 63):  # bands and content alike: red on the left, blue on the right
        assert close(result.getpixel((2, y)), RED) and close(result.getpixel((61, y)), BLUE), y
    band = pixels(result)[:16]
    assert (band == band[15]).all()  # the top band repeats the content's first row


def test_resize_and_fill_of_a_tall_picture_fills_left_and_right():
    source = stripes((50, 100), [RED, BLUE], vertical=False)
    result = masking.resize_image(2, source, 64, 32)  # content 16x32 at x=24
    content = pixels(result)
    assert (content[:, :24] == content[:, 24:25]).all() and (content[:, 40:] == content[:, 39:40]).all()
    assert close(result.getpixel((0, 2)), RED) and close(result.getpixel((63, 29)), BLUE)


def test_resize_and_fill_with_odd_bands_leaves_no_black_line():
    result = masking.resize_image(2, Image.new("RGB", (40, 24), GREEN), 20, 11)  # content 20x12? no: 18x11
    assert result.size == (20, 11)
    assert all(close(result.getpixel((x, y)), GREEN, 2) for x in range(20) for y in range(11))


@pytest.mark.parametrize("image_mode", ["L", "RGBA"])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_resize_keeps_mask_and_alpha_modes(mode, image_mode):
    result = masking.resize_image(mode, Image.new(image_mode, (30, 20), 200), 16, 16)
    assert result.mode == image_mode and result.size == (16, 16)


def test_resize_converts_other_modes():
    assert masking.resize_image(0, Image.new("CMYK", (10, 10)), 8, 8).mode == "RGB"


def test_upscaler_is_used_only_to_enlarge_rgb():
    calls = []

    def upscale(image, scale):
        calls.append((image.size, scale))
        return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST)

    assert masking.resize_image(0, noise((32, 16)), 64, 48, upscale=upscale).size == (64, 48)
    assert calls == [((32, 16), 3.0)]
    masking.resize_image(0, noise((64, 64)), 32, 32, upscale=upscale)  # shrinking
    masking.resize_image(0, Image.new("L", (8, 8)), 32, 32, upscale=upscale)  # a mask
    assert len(calls) == 1


@pytest.mark.parametrize("mode, size", [(4, (8, 8)), (-1, (8, 8)), ("1", (8, 8)), (0, (0, 8)), (1, (8, -8))])
def test_resize_rejects_bad_mode_or_size(mode, size):
    with pytest.raises(ValueError, match="Crop and resize|cannot resize"):
        masking.resize_image(mode, noise((16, 16)), *size)


# ---------------------------------------------------------------- flatten

def test_flatten_puts_transparency_over_the_background():
    image = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (2, 0, 4, 2))
    assert masking.flatten(image).getpixel((3, 0)) == WHITE
    flat = masking.flatten(image, "#000080")
    assert flat.mode == "RGB" and flat.getpixel((3, 1)) == (0, 0, 128) and flat.getpixel((0, 0)) == RED


def test_flatten_other_modes():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] * 256)
    palette.info["transparency"] = 0
    assert masking.flatten(palette, "lime").getpixel((1, 1)) == GREEN
    assert masking.flatten(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == WHITE
    assert masking.flatten(Image.new("LA", (2, 2), (100, 255))).getpixel((0, 0)) == (100, 100, 100)


def test_flatten_bad_colour():
    with pytest.raises(ValueError, match="not a colour"):
        masking.flatten(Image.new("RGBA", (2, 2)), "not-a-colour")


# ---------------------------------------------------------------- masks

def test_prepare_mask_without_blur_is_the_mask_and_invert_flips_it():
    mask = rect_mask((20, 10), (5, 2, 10, 6)).convert("RGB")
    plain = masking.prepare_mask(mask, blur_x=0, blur_y=0, invert=False)
    assert plain.mode == "L" and np.array_equal(pixels(plain), pixels(mask.convert("L")))
    inverted = masking.prepare_mask(mask, blur_x=0, blur_y=0, invert=True)
    assert np.array_equal(pixels(inverted), 255 - pixels(plain))


def test_prepare_mask_blur_softens_along_each_axis():
    mask = rect_mask((60, 60), (20, 20, 40, 40))
    both = pixels(masking.prepare_mask(mask, blur_x=4, blur_y=4, invert=False))
    assert 0 < both[30, 17] < 255 and 0 < both[17, 30] < 255  # soft outside the square
    assert 0 < both[30, 22] < 255  # and inside its edge
    assert both[30, 30] > 240 and both[0, 0] == 0 and both[30, 5] == 0
    across = pixels(masking.prepare_mask(mask, blur_x=4, blur_y=0, invert=False))
    assert 0 < across[30, 17] < 255
    assert across[17, 30] == 0 and (across[20:40, 30] == across[30, 30]).all()  # no vertical spread
    down = pixels(masking.prepare_mask(mask, blur_x=0, blur_y=4, invert=False))
    assert 0 < down[17, 30] < 255 and down[30, 17] == 0


def test_prepare_mask_painted_on_a_transparent_layer_uses_the_alpha():
    layer = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    layer.paste((0, 0, 0, 200), (2, 2, 5, 5))  # black strokes: brightness would say "nothing"
    layer.paste((255, 255, 255, 100), (6, 6, 8, 8))  # faint: rounded away, as A1111 does
    mask = pixels(masking.prepare_mask(layer, blur_x=0, blur_y=0, invert=False))
    assert mask[3, 3] == 255 and mask[7, 7] == 0 and mask[0, 0] == 0
    opaque = Image.new("RGBA", (4, 4), (255, 255, 255, 255))
    assert pixels(masking.prepare_mask(opaque, blur_x=0, blur_y=0, invert=False)).min() == 255


def test_prepare_mask_rejects_negative_blur():
    with pytest.raises(ValueError, match="blur"):
        masking.prepare_mask(Image.new("L", (4, 4)), blur_x=-1, blur_y=0, invert=False)


def test_binarize():
    ramp = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")
    values = pixels(masking.binarize(ramp)).ravel()
    assert set(values) == {0, 255} and values[127] == 0 and values[128] == 255
    assert pixels(masking.binarize(ramp, threshold=200)).ravel()[199] == 0


def test_crop_region_pads_and_clamps():
    mask = rect_mask((100, 80), (40, 30, 50, 45))
    assert masking.crop_region(mask, 0) == (40, 30, 50, 45)
    assert masking.crop_region(mask, 8) == (32, 22, 58, 53)
    assert masking.crop_region(rect_mask((100, 80), (2, 0, 97, 10)), 16) == (0, 0, 100, 26)
    assert masking.crop_region(Image.new("L", (10, 10)), 32) is None
    assert masking.crop_region(Image.new("RGB", (10, 10)), 0) is None
    with pytest.raises(ValueError):
        masking.crop_region(mask, -1)


@pytest.mark.parametrize("region, processing, image", [
    ((40, 30, 50, 45), (512, 512), (100, 80)),
    ((40, 30, 50, 45), (768, 512), (100, 80)),
    ((10, 10, 90, 20), (512, 768), (100, 200)),
    ((0, 0, 20, 10), (512, 512), (100, 80)),  # at the corner: moved inside
    ((80, 60, 100, 80), (512, 256), (100, 80)),  # at the other corner
])
def test_expand_crop_region_has_the_processing_aspect_ratio(region, processing, image):
    x1, y1, x2, y2 = masking.expand_crop_region(region, *processing, *image)
    assert 0 <= x1 and 0 <= y1 and x2 <= image[0] and y2 <= image[1]
    assert x1 <= region[0] and y1 <= region[1] and x2 >= region[2] and y2 >= region[3]
    assert (x2 - x1) / (y2 - y1) == pytest.approx(processing[0] / processing[1], abs=0.1)


def test_expand_crop_region_clips_when_the_picture_is_too_small():
    assert masking.expand_crop_region((0, 0, 100, 10), 512, 512, 100, 50) == (0, 0, 100, 50)


def test_fill_changes_only_the_masked_area_and_uses_the_surroundings():
    image = Image.new("RGB", (64, 64), RED)
    image.paste(BLACK, (20, 20, 40, 40))
    mask = rect_mask((64, 64), (16, 16, 44, 44))
    filled = pixels(masking.fill(image, mask))
    outside = pixels(mask) == 0
    assert np.array_equal(filled[outside], pixels(image)[outside])
    assert close(tuple(filled[30, 30]), RED, 40)  # the black hole now looks like its surroundings


def test_latent_mask_is_zero_or_one_at_latent_size():
    mask = rect_mask((64, 32), (32, 0, 64, 32))
    latent = masking.latent_mask(mask, 8, 4)
    assert latent.shape == (1, 1, 4, 8) and latent.dtype == torch.float32
    assert set(latent.unique().tolist()) == {0.0, 1.0}
    assert latent[0, 0, :, :3].max() == 0 and latent[0, 0, :, 5:].min() == 1


def test_sketch_mask_marks_changed_pixels():
    original = noise((40, 30))
    sketched = original.copy()
    ImageDraw.Draw(sketched).line((5, 5, 30, 5), fill=(1, 2, 3), width=3)
    mask = masking.sketch_mask(original, sketched)
    assert mask.mode == "L" and mask.size == (40, 30)
    changed = pixels(mask) == 255
    assert changed[5, 10] and changed[5, 25] and not changed[20, 20]
    assert changed.sum() == (np.abs(pixels(sketched) - pixels(original)).max(axis=2) > 0).sum()
    slightly = Image.fromarray(np.clip(pixels(original) + 3, 0, 255).astype(np.uint8))
    assert pixels(masking.sketch_mask(original, slightly, threshold=5)).max() == 0
    with pytest.raises(ValueError, match="sizes differ"):
        masking.sketch_mask(original, noise((10, 10)))


# ---------------------------------------------------------------- overlay: results put back

def test_whole_picture_keeps_the_original_outside_the_mask():
    original = noise((64, 48))
    mask = masking.prepare_mask(rect_mask((64, 48), (16, 12, 48, 36)), blur_x=4, blur_y=4, invert=False)
    result = Image.new("RGB", (64, 48), GREEN)
    final = masking.apply_overlay(result, masking.overlay(original, mask))
    assert final.mode == "RGB" and final.size == (64, 48)
    m = pixels(mask)
    assert np.array_equal(pixels(final)[m == 0], pixels(original)[m == 0])
    # The mask counts double (A1111): from half strength the result shows alone.
    assert (pixels(final)[m >= 128] == GREEN).all()
    assert (m >= 128).sum() > (m == 255).sum()


def test_only_masked_pastes_the_result_into_the_region_of_the_full_picture():
    original = noise((96, 64))
    mask = rect_mask((96, 64), (60, 20, 80, 30))
    region = masking.expand_crop_region(masking.crop_region(mask, 4), 32, 32, 96, 64)
    x1, y1, x2, y2 = region
    result = Image.new("RGB", (32, 32), BLUE)  # what the pipeline made of the crop
    final = masking.apply_overlay(result, masking.overlay(original, mask, region), region)
    assert final.size == (96, 64) and final.mode == "RGB"
    m = pixels(mask)
    assert np.array_equal(pixels(final)[m == 0], pixels(original)[m == 0])
    assert (pixels(final)[m == 255] == BLUE).all()


def test_only_masked_fits_the_result_to_the_region():
    # The region is 40x20 and the result 32x16: crop-and-resize keeps its left/right halves in place.
    original = Image.new("RGB", (100, 50), BLACK)
    mask = rect_mask((100, 50), (10, 10, 50, 30))
    region = (10, 10, 50, 30)
    result = stripes((32, 16), [RED, GREEN])
    final = masking.apply_overlay(result, masking.overlay(original, mask, region), region)
    assert close(final.getpixel((12, 20)), RED) and close(final.getpixel((48, 20)), GREEN)
    assert final.getpixel((5, 5)) == BLACK


def test_apply_overlay_without_overlay():
    result = Image.new("RGB", (16, 16), RED)
    assert masking.apply_overlay(result, None) .getpixel((3, 3)) == RED
    pasted = masking.apply_overlay(result, None, (8, 8, 24, 24), canvas_size=(32, 32))
    assert pasted.size == (32, 32) and pasted.getpixel((10, 10)) == RED and pasted.getpixel((2, 2)) == BLACK
    with pytest.raises(ValueError, match="canvas_size"):
        masking.apply_overlay(result, None, (0, 0, 8, 8))
    with pytest.raises(ValueError, match="sizes differ"):
        masking.apply_overlay(result, masking.overlay(noise((8, 8)), Image.new("L", (8, 8))))


# ---------------------------------------------------------------- outpainting canvas

@pytest.mark.parametrize("sides, size, offset", [
    # The picture is 61x45: each grown axis is rounded up to a multiple of 8,
    # the extra shared between its two sides in proportion.
    (dict(left=64, right=0, up=0, down=0), (128, 45), (67, 0)),
    (dict(left=0, right=40, up=0, down=0), (104, 45), (0, 0)),
    (dict(left=0, right=0, up=24, down=0), (61, 72), (0, 27)),
    (dict(left=0, right=0, up=0, down=8), (61, 56), (0, 0)),
    (dict(left=20, right=20, up=20, down=20), (104, 88), (21, 21)),
    (dict(left=5, right=0, up=0, down=3), (72, 48), (11, 0)),
])
def test_expand_canvas_places_the_picture_and_masks_the_new_area(sides, size, offset):
    image = noise((61, 45))
    canvas, mask = masking.expand_canvas(image, **sides, overlap=4)
    assert canvas.size == mask.size == size and canvas.mode == "RGB" and mask.mode == "L"
    (w, h), (left, up) = size, offset
    assert np.array_equal(pixels(canvas)[up:up + 45, left:left + 61], pixels(image))

    # White over the new area and 4 pixels into the picture on each grown side; black elsewhere.
    keep = np.zeros((h, w), bool)
    keep[up + (4 if sides["up"] else 0):up + 45 - (4 if sides["down"] else 0),
         left + (4 if sides["left"] else 0):left + 61 - (4 if sides["right"] else 0)] = True
    m = pixels(mask)
    assert (m[keep] == 0).all() and (m[~keep] == 255).all()


def test_expand_canvas_edge_fill_stretches_the_border():
    image = stripes((16, 16), [RED, BLUE])
    canvas, _ = masking.expand_canvas(image, left=16, right=16, up=0, down=8)
    assert canvas.size == (48, 24)
    assert canvas.getpixel((0, 5)) == RED and canvas.getpixel((47, 5)) == BLUE
    assert canvas.getpixel((20, 23)) == RED and canvas.getpixel((40, 23)) == BLUE


def test_expand_canvas_noise_is_seeded_and_in_the_pictures_colours():
    image = Image.new("RGB", (32, 32), (200, 40, 40))
    image.paste((180, 60, 20), (0, 0, 16, 32))
    canvas, mask = masking.expand_canvas(image, left=0, right=32, up=0, down=0, fill_mode="noise", seed=3)
    again, _ = masking.expand_canvas(image, left=0, right=32, up=0, down=0, fill_mode="noise", seed=3)
    other, _ = masking.expand_canvas(image, left=0, right=32, up=0, down=0, fill_mode="noise", seed=4)
    assert np.array_equal(pixels(canvas), pixels(again)) and not np.array_equal(pixels(canvas), pixels(other))
    new = pixels(canvas)[:, 32:].reshape(-1, 3)
    assert {tuple(p) for p in new} <= {(200, 40, 40), (180, 60, 20)}  # only the picture's own colours
    assert 0.3 < (new == (200, 40, 40)).all(axis=1).mean() < 0.7  # in about its proportions
    assert np.array_equal(pixels(canvas)[:, :32], pixels(image))


def test_expand_canvas_rejects_bad_arguments():
    with pytest.raises(ValueError, match="left"):
        masking.expand_canvas(noise((8, 8)), left=-8, right=0, up=0, down=0)
    with pytest.raises(ValueError, match="fill_mode"):
        masking.expand_canvas(noise((8, 8)), left=8, right=0, up=0, down=0, fill_mode="zeros")


def test_expand_canvas_with_nothing_to_add_masks_nothing():
    canvas, mask = masking.expand_canvas(noise((16, 8)), left=0, right=0, up=0, down=0)
    assert canvas.size == (16, 8) and pixels(mask).max() == 0


# ---------------------------------------------------------------- tiles

@pytest.mark.parametrize("size, tile, overlap", [
    ((100, 70), (32, 24), 8), ((64, 64), (32, 32), 0), ((65, 33), (32, 32), 16),
    ((20, 10), (32, 32), 8), ((32, 100), (32, 32), 31),
])
def test_split_and_combine_round_trip_exactly(size, tile, overlap):
    image = noise(size)
    tiles = masking.split_tiles(image, *tile, overlap)
    assert all(t.image.size == tile for t in tiles)
    covered = np.zeros(size[::-1], bool)
    for t in tiles:
        covered[t.y:t.y + tile[1], t.x:t.x + tile[0]] = True
    assert covered.all()
    combined = masking.combine_tiles(tiles)
    assert combined.size == size and np.array_equal(pixels(combined), pixels(image))


def test_combine_uses_the_processed_tiles_and_blends_the_overlap():
    tiles = masking.split_tiles(Image.new("RGB", (56, 32)), 32, 32, 8)
    assert [t.x for t in tiles] == [0, 24]
    tiles.rows[0][0].image = Image.new("RGB", (32, 32), RED)
    tiles.rows[0][1].image = Image.new("RGB", (32, 32), BLUE)
    row = pixels(masking.combine_tiles(tiles))[10]
    assert (row[:24] == RED).all() and (row[32:] == BLUE).all()
    reds = row[24:32, 0]
    assert reds[0] == 255 and (np.diff(reds) < 0).all() and reds[-1] < 64  # a linear fade


def test_tiles_of_a_mask_stay_masks():
    mask = rect_mask((70, 50), (10, 10, 60, 40))
    combined = masking.combine_tiles(masking.split_tiles(mask, 32, 32, 8))
    assert combined.mode == "L" and np.array_equal(pixels(combined), pixels(mask))


def test_tile_errors():
    with pytest.raises(ValueError, match="overlap"):
        masking.split_tiles(noise((64, 64)), 32, 32, 32)
    with pytest.raises(ValueError, match="tile size"):
        masking.split_tiles(noise((64, 64)), 0, 32, 0)
    tiles = masking.split_tiles(noise((64, 64)), 32, 32, 8)
    tiles.rows[0][1].image = noise((16, 16))
    with pytest.raises(ValueError, match="expected 32x32"):
        masking.combine_tiles(tiles)
