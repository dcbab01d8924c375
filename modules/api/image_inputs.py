"""Images in API requests: base64 or data URIs, decoded at the edge with the same limits as uploads."""
from __future__ import annotations

from modules import images
from modules.api.errors import validation_error


def decode_image_field(value: str, loc: list):
    try:
        return images.decode_base64_image(value)
    except ValueError as error:
        raise validation_error(loc, str(error)) from None
