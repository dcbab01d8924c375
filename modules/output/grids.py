"""Labelled grids and the X/Y/Z plot's value syntax (A1111's `images.draw_grid_annotations`,
`images.draw_prompt_matrix` and the range parsing of `scripts/xyz_grid.py`).

A labelled grid is an image grid with a white band above (column labels) and to the left (row labels);
a label too wide for its cell is wrapped at spaces, and a word still too wide is drawn in a smaller font.
The font is Pillow's bundled scalable default, so nothing is downloaded.
"""
from __future__ import annotations

import csv
import functools
import io
import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from modules import images
from modules.output.infotext import quote

ACTIVE = (0, 0, 0)
INACTIVE = (153, 153, 153)
# A1111 sizes the font from the cell ((w + h) // 25: 40 px for 512x512); tiny cells still get readable labels.
MIN_FONT_SIZE = 12
MAX_AXIS_VALUES = 1000   # values one axis may expand to ("1-100000000" is a typo, not a plan)


@dataclass
class GridAnnotation:
    text: str = ""
    is_active: bool = True       # inactive labels (prompt matrix parts left out) are grey and struck through
    size: tuple[int, int] = (0, 0)
    allowed_width: int = 0


@functools.lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def font_size(width: int, height: int) -> int:
    return max(MIN_FONT_SIZE, (width + height) // 25)


def _wrap(draw: ImageDraw.ImageDraw, text: str, typeface, line_length: int) -> list[str]:
    lines = [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if draw.textlength(line, font=typeface) <= line_length:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def _measure(draw: ImageDraw.ImageDraw, texts: list[GridAnnotation], typeface, allowed_width: int
             ) -> list[GridAnnotation]:
    """The annotations wrapped to `allowed_width`, each line measured."""
    wrapped = []
    for annotation in texts:
        for line in _wrap(draw, annotation.text, typeface, allowed_width):
            left, top, right, bottom = draw.multiline_textbbox((0, 0), line, font=typeface) if line else (0, 0, 0, 0)
            wrapped.append(GridAnnotation(line, annotation.is_active, (right - left, bottom - top), allowed_width))
    return wrapped


def _height(lines: list[GridAnnotation], spacing: int) -> int:
    heights = [line.size[1] for line in lines if line.text]
    return sum(heights) + spacing * (len(heights) - 1) if heights else 0


def _draw_lines(draw: ImageDraw.ImageDraw, x: float, y: float, lines: list[GridAnnotation], size: int,
                spacing: int) -> None:
    for line in lines:
        if not line.text:
            continue
        line_size = size
        while draw.textlength(line.text, font=font(line_size)) > line.allowed_width and line_size > 1:
            line_size -= 1
        color = ACTIVE if line.is_active else INACTIVE
        draw.multiline_text((x, y + line.size[1] / 2), line.text, font=font(line_size), fill=color, anchor="mm",
                            align="center")
        if not line.is_active:
            half = line.size[0] // 2
            draw.line((x - half, y + line.size[1] // 2, x + half, y + line.size[1] // 2), fill=INACTIVE,
                      width=max(1, size // 10))
        y += line.size[1] + spacing


def draw_grid_annotations(grid: Image.Image, width: int, height: int, hor_texts: list[list[GridAnnotation]],
                          ver_texts: list[list[GridAnnotation]], margin: int = 0) -> Image.Image:
    """`grid` (cells of width×height) with column labels above and row labels on the left, and `margin`
    pixels between cells. One list of annotations per column (`hor_texts`) and per row (`ver_texts`)."""
    cols, rows = grid.width // width, grid.height // height
    if len(hor_texts) != cols:
        raise ValueError(f"bad number of column labels: {len(hor_texts)}; the grid has {cols} columns")
    if len(ver_texts) != rows:
        raise ValueError(f"bad number of row labels: {len(ver_texts)}; the grid has {rows} rows")
    size = font_size(width, height)
    spacing = size // 2
    typeface = font(size)
    has_row_labels = any(annotation.text for lines in ver_texts for annotation in lines)
    pad_left = max(width * 3 // 4, size * 4) if has_row_labels else 0

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    hor_lines = [_measure(measure, texts, typeface, width) for texts in hor_texts]
    ver_lines = [_measure(measure, texts, typeface, pad_left) for texts in ver_texts]
    hor_heights = [_height(lines, spacing) for lines in hor_lines]
    ver_heights = [_height(lines, spacing) for lines in ver_lines]
    pad_top = max(hor_heights) + spacing * 2 if any(hor_heights) else 0

    result = Image.new("RGB", (grid.width + pad_left + margin * (cols - 1),
                               grid.height + pad_top + margin * (rows - 1)), "white")
    for row in range(rows):
        for col in range(cols):
            cell = grid.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))

    draw = ImageDraw.Draw(result)
    for col, lines in enumerate(hor_lines):
        x = pad_left + (width + margin) * col + width / 2
        _draw_lines(draw, x, pad_top / 2 - hor_heights[col] / 2, lines, size, spacing)
    for row, lines in enumerate(ver_lines):
        y = pad_top + (height + margin) * row + height / 2 - ver_heights[row] / 2
        _draw_lines(draw, pad_left / 2, y, lines, size, spacing)
    return result


def draw_prompt_matrix(grid: Image.Image, width: int, height: int, prompt_parts: list[str],
                       margin: int = 0) -> Image.Image:
    """The prompt matrix's labels: the variable parts (prompt_parts[1:]) split between the columns and the
    rows; each label shows every part, grey and struck through where that cell leaves it out."""
    parts = prompt_parts[1:]
    boundary = math.ceil(len(parts) / 2)
    horizontal, vertical = parts[:boundary], parts[boundary:]
    hor_texts = [[GridAnnotation(text, is_active=bool(position & (1 << i))) for i, text in enumerate(horizontal)]
                 for position in range(1 << len(horizontal))]
    ver_texts = [[GridAnnotation(text, is_active=bool(position & (1 << i))) for i, text in enumerate(vertical)]
                 for position in range(1 << len(vertical))]
    return draw_grid_annotations(grid, width, height, hor_texts, ver_texts, margin)


MAX_GRID_MEGAPIXELS = 200   # A1111's img_max_size_mp default: a script's grid larger than this is refused up front


def image_grid(pictures: list[Image.Image], rows: int) -> Image.Image:
    """`images.make_grid`, except that pictures of different sizes (an X/Y/Z "Size" axis) are centred in
    cells as large as the largest one instead of overlapping."""
    width, height = max(p.width for p in pictures), max(p.height for p in pictures)
    fitted = []
    for picture in pictures:
        if picture.size != (width, height):
            canvas = Image.new("RGB", (width, height), "black")
            canvas.paste(picture, ((width - picture.width) // 2, (height - picture.height) // 2))
            picture = canvas
        fitted.append(picture)
    return images.make_grid(fitted, rows=rows)


# ---------------------------------------------------------------- X/Y/Z values

RANGE_INT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_INT_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
RANGE_FLOAT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RANGE_FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\[(\d+)\s*])?\s*")


def csv_values(text: str) -> list[str]:
    """A comma-separated list, with CSV quoting for values that contain commas ('"a, b", c' → ['a, b', 'c'])."""
    return [item.strip() for item in itertools.chain.from_iterable(
        csv.reader(io.StringIO(text or ""), skipinitialspace=True))]


def csv_string(values: list[str]) -> str:
    with io.StringIO() as out:
        csv.writer(out).writerow(values)
        return out.getvalue().strip()


def _number(text: str, kind: type):
    cleaned = text.replace(" ", "")
    try:
        return kind(cleaned)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{text.strip()!r} is not {what}") from None


def _check_count(count: int, text: str) -> None:
    if count > MAX_AXIS_VALUES:
        raise ValueError(f"{text.strip()!r} makes {count} values; at most {MAX_AXIS_VALUES} per axis")


def _int_range(text: str) -> list[int] | None:
    match = RANGE_INT.fullmatch(text)
    if match is not None:
        start, end = _number(match.group(1), int), _number(match.group(2), int)
        step = int(match.group(3)) if match.group(3) is not None else 1
        if step == 0:
            raise ValueError(f"{text.strip()!r}: the step must not be 0")
        values = range(start, end + (1 if step > 0 else -1), step)
        _check_count(len(values), text)
        return list(values)
    match = RANGE_INT_COUNT.fullmatch(text)
    if match is not None:
        count = int(match.group(3))
        _check_count(count, text)
        start, end = _number(match.group(1), int), _number(match.group(2), int)
        return [int(value) for value in np.linspace(start, end, num=count).tolist()]
    return None


def _float_range(text: str) -> list[float] | None:
    match = RANGE_FLOAT.fullmatch(text)
    if match is not None:
        start, end = _number(match.group(1), float), _number(match.group(2), float)
        step = float(match.group(3)) if match.group(3) is not None else 1.0
        if step == 0 or (end - start) * step < 0:
            raise ValueError(f"{text.strip()!r}: the step must go from {start} towards {end}")
        count = math.floor((end - start) / step + 1e-9) + 1   # the tolerance keeps the end despite rounding
        _check_count(count, text)
        return [round(start + index * step, 10) for index in range(count)]
    match = RANGE_FLOAT_COUNT.fullmatch(text)
    if match is not None:
        count = int(match.group(3))
        _check_count(count, text)
        start, end = _number(match.group(1), float), _number(match.group(2), float)
        return [round(value, 10) for value in np.linspace(start, end, num=count).tolist()]
    return None


def expand_numbers(values: list[str], kind: type) -> list:
    """A1111's X/Y/Z number syntax, value by value: "5", "1-5" (every integer), "1-5 (+2)" (a step),
    "1-10 [5]" (5 values evenly spread), and the same with decimals for floats ("1.5-2.5 (+0.5)").
    Empty values are skipped; ValueError names a value that is not a number."""
    expanded: list = []
    for value in values:
        if not value.strip():
            continue
        ranged = _int_range(value) if kind is int else _float_range(value)
        expanded += ranged if ranged is not None else [_number(value, kind)]
        _check_count(len(expanded), ", ".join(values))
    return expanded


def with_params(infotext: str, params: dict) -> str:
    """The infotext with more "Key: value" pairs, before Version and User as A1111 orders them (used for a
    grid: the first cell's infotext plus the script's keys)."""
    added = ", ".join(f"{key}: {quote(value)}" for key, value in params.items() if value is not None)
    if not added:
        return infotext
    head, newline, line = infotext.rpartition("\n")
    tails = [at for at in (line.find(", Version: "), line.find(", User: ")) if at >= 0]
    if tails:
        line = f"{line[:min(tails)]}, {added}{line[min(tails):]}"
    else:
        line = f"{line}, {added}" if line else added
    return f"{head}{newline}{line}"
