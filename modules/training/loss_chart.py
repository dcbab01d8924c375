"""The loss chart a training shows while it runs: a picture of loss against step (each step's loss faint, a moving
average on top), drawn with PIL so that the web UI needs no plotting package."""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

BACKGROUND, AXES, RAW, SMOOTH = (255, 255, 255), (90, 90, 90), (170, 190, 230), (220, 90, 30)
# the top margin leaves room for the label the page puts over the picture's top left corner
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 16, 36, 34
FONT_SIZE = 14   # PIL's own scalable font: no font file needed


def moving_average(values: list[float], window: int) -> list[float]:
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def loss_chart(points: list[tuple[int, float]], width: int = 640, height: int = 260) -> Image.Image:
    """`points`: (step, loss) in step order. With fewer than two points the axes are drawn, empty."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.font = ImageFont.load_default(size=FONT_SIZE)
    left, top, right, bottom = MARGIN_LEFT, MARGIN_TOP, width - MARGIN_RIGHT, height - MARGIN_BOTTOM
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXES)
    if len(points) < 2:
        draw.text((left + 8, top + 8), "loss: waiting for the first steps", fill=AXES)
        return image
    steps = [step for step, _ in points]
    losses = [loss for _, loss in points]
    low, high = min(losses), max(losses)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    first, last = steps[0], steps[-1]
    span = max(last - first, 1)

    def at(step: int, loss: float) -> tuple[float, float]:
        return (left + (step - first) / span * (right - left), bottom - (loss - low) / (high - low) * (bottom - top))

    draw.line([at(step, loss) for step, loss in points], fill=RAW, width=1)
    smooth = moving_average(losses, max(1, len(losses) // 20))
    draw.line([at(step, loss) for step, loss in zip(steps, smooth)], fill=SMOOTH, width=2)
    for loss in (high, (high + low) / 2, low):
        y = at(first, loss)[1]
        draw.line([(left - 4, y), (left, y)], fill=AXES)
        draw.text((left - 8, y), f"{loss:.4g}", fill=AXES, anchor="rm")
    draw.text((left, bottom + 6), f"step {first}", fill=AXES)
    draw.text((right, bottom + 6), f"step {last}   loss {smooth[-1]:.4g} (average)", fill=AXES, anchor="ra")
    return image
