"""Images in API requests: base64, data URIs or http(s) URLs, decoded at the edge with the same limits as uploads."""
from __future__ import annotations

from modules import images
from modules.untrusted import url_images
from modules.api.errors import validation_error


def decode_image_field(value: str, loc: list, options):
    """The image in one request field; a 422 naming `loc` for anything else.

    A URL is fetched only when `options.api_enable_requests` is on (A1111's setting), from public addresses
    only (modules.untrusted.url_images). The fetch blocks for up to ~15 s, so an async route must run this in a worker
    thread (starlette.concurrency.run_in_threadpool)."""
    try:
        if url_images.looks_like_url(value):
            if not options.api_enable_requests:
                raise ValueError("URL images are disabled (setting api_enable_requests); send the image as base64")
            return url_images.fetch_image(value, user_agent=options.api_useragent)
        return images.decode_base64_image(value)
    except ValueError as error:
        raise validation_error(loc, str(error)) from None
