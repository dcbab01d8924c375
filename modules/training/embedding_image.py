"""A1111's "Save images with embedding in PNG chunks" for textual-inversion training: a copy of a training preview
with a caption drawn over it (title `<name>`; footer: checkpoint name, `[short hash]`, `<vectors>v <step>s`) and the
embedding inside, written as `<log>/image_embeddings/<name>-<step>.png`. Dropped into the embeddings folder, the PNG
is that embedding (`networks/textual_inversion/files.py` reads it back).

The embedding is in the PNG's `sd-ti-embedding` text chunk, as A1111 writes it: base64 of the JSON of its `.pt`
dict, tensors as {"TORCHTENSOR": [[...]]}. A1111 also hides the same data in pixel strips beside the image
(`insert_image_data_embed`); that copy is left out here: A1111's reader takes the text chunk first, ours reads only
the chunk, and the strips would only widen the picture with noise.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from modules.images import replace_atomically
from modules.jobs import StorageFull
from modules.networks.textual_inversion import PNG_CHUNK, Embedding
from modules.training.embedding_files import a1111_embedding_dict

TEXT_COLOUR = (255, 255, 255, 230)
PADDING = 10
BASE_FONT_SIZE = 32
MAX_FONT_SIZE = 72


def embedding_chunk(embedding: Embedding) -> str:
    """The `sd-ti-embedding` chunk's text: A1111's `embedding_to_b64` of the dict its `.pt` file holds."""
    data = a1111_embedding_dict(embedding)
    data["string_to_param"] = {"*": {"TORCHTENSOR": data["string_to_param"]["*"].tolist()}}
    return base64.b64encode(json.dumps(data).encode()).decode("ascii")


def _edge_shade(size: tuple[int, int]) -> Image.Image:
    """A1111's gradient: black, opaque at the top and bottom edges and clear in the middle, so white text reads."""
    width, height = size
    rows = np.arange(height) / height
    strength = np.maximum(1 - np.cos(rows * 1.5), 1 - np.cos((1 - rows) * 1.5 * 1.1))
    alpha = np.clip(strength * 255, 0, 255).astype(np.uint8)
    shade = np.zeros((height, width, 4), dtype=np.uint8)
    shade[..., 3] = alpha[:, None]
    return Image.fromarray(shade, mode="RGBA")


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(1, size))   # PIL's own scalable font: no font file needed


def _fitting_size(draw: ImageDraw.ImageDraw, text: str, room: float) -> int:
    """A1111's rule: the size that makes `text` about `room` pixels wide, at most MAX_FONT_SIZE."""
    width = draw.textbbox((0, 0), text, font=_font(BASE_FONT_SIZE))[2]
    if width <= 0:   # nothing to draw: no limit from this text
        return MAX_FONT_SIZE
    return min(int(BASE_FONT_SIZE * room / width), MAX_FONT_SIZE)


def caption_image(image: Image.Image, title: str, footer_left: str, footer_mid: str, footer_right: str
                  ) -> Image.Image:
    """A1111's `caption_image_overlay`: the title across the top, three footers along the bottom."""
    captioned = Image.alpha_composite(image.convert("RGBA"), _edge_shade(image.size))
    draw = ImageDraw.Draw(captioned)
    width, height = captioned.size
    title_size = _fitting_size(draw, title, width * 0.75 - PADDING * 4)
    draw.text((PADDING, PADDING), title, anchor="lt", font=_font(title_size), fill=TEXT_COLOUR)
    footer_size = min(_fitting_size(draw, text, width / 3 - PADDING)
                      for text in (footer_left, footer_mid, footer_right))
    font = _font(footer_size)
    bottom = height - PADDING
    draw.text((PADDING, bottom), footer_left, anchor="ls", font=font, fill=TEXT_COLOUR)
    draw.text((width / 2, bottom), footer_mid, anchor="ms", font=font, fill=TEXT_COLOUR)
    draw.text((width - PADDING, bottom), footer_right, anchor="rs", font=font, fill=TEXT_COLOUR)
    return captioned.convert("RGB")


def save_embedding_image(preview: Image.Image, embedding: Embedding, folder: Path, name: str, step: int) -> Path:
    """Write `<folder>/<name>-<step>.png`: the captioned preview with `embedding` in its text chunk. Atomically:
    a full disk raises StorageFull and leaves no partial file."""
    short_hash = f"[{embedding.sd_checkpoint}]" if embedding.sd_checkpoint else ""
    captioned = caption_image(preview, f"<{embedding.name}>", embedding.sd_checkpoint_name or "", short_hash,
                              f"{embedding.vector_count}v {step}s")
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_CHUNK, embedding_chunk(embedding))
    buffer = io.BytesIO()
    captioned.save(buffer, "PNG", pnginfo=info)
    path = Path(folder) / f"{name}-{step}.png"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, buffer.getvalue())
    except OSError as error:
        raise StorageFull(f"could not save the embedding image {path}: {error}") from None
    return path

