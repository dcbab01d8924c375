"""Images in API responses: base64 PNGs that keep their infotext."""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from modules import images


def encode_image(image) -> str:
    return images.encode_base64_png(image, image.info.get("parameters"))


async def encode_images(pictures: list) -> list[str]:
    """PNG-encoded in a thread: large images take a while, and /progress must not wait for them."""
    return await run_in_threadpool(lambda: [encode_image(image) for image in pictures])
