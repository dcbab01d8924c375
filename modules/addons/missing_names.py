"""The error an extension gets when it reaches for an A1111 name this web UI does not have.

A1111's internals (`sd_hijack.model_hijack.clip`, `shared.sd_model.model.diffusion_model`, …) cannot exist on a
diffusers backend. A bare AttributeError deep in a traceback does not tell the user which extension asked, so
the A1111 modules here raise `missing_name(...)`: it names the extension (found from the calling frames), the
attribute and, where known, what to use instead.
"""
from __future__ import annotations

import re
import sys

_EXTENSION_FILE = re.compile(r"[\\/]extensions(?:-builtin)?[\\/]([^\\/]+)[\\/]")


def calling_extension(skip: int = 1) -> str | None:
    """The folder name of the extension whose code is nearest on the call stack, or None."""
    frame = sys._getframe(skip)
    while frame is not None:
        match = _EXTENSION_FILE.search(frame.f_code.co_filename)
        if match:
            return match.group(1)
        frame = frame.f_back
    return None


class MissingA1111Name(AttributeError):
    """An A1111 name that has no equivalent here (an AttributeError, so `getattr(x, name, default)` and
    `hasattr` go on working as extensions expect)."""


def missing_name(where: str, name: str, why: str = "") -> MissingA1111Name:
    """The error for `where.name` (`where`: "modules.sd_hijack.model_hijack", …), naming the asking extension."""
    extension = calling_extension(2)
    asker = f"extension '{extension}' asked for" if extension else "asked for"
    reason = f": {why}" if why else ": this web UI runs on diffusers and has no such A1111 internal"
    return MissingA1111Name(f"{asker} {where}.{name}, which does not exist here{reason} (docs/extensions.md)")


# A1111's own model code and built-in extensions, which extensions import directly: none exists on diffusers.
_A1111_MODEL_CODE = {
    "ldm": "A1111's original Stable Diffusion model code (ldm)",
    "sgm": "A1111's SDXL model code (sgm)",
    "k_diffusion": "A1111's bundled k-diffusion repository",
    "lora": "A1111's built-in Lora extension",
    "networks": "A1111's built-in Lora extension",
    "lyco_helpers": "A1111's built-in Lora extension",
}


def explain_import_error(error: BaseException) -> str:
    """A line for the Extensions tab saying why an extension's import failed, where the reason is this backend:
    A1111's model code it patches, or an A1111 internal this web UI does not have."""
    if not isinstance(error, ImportError):
        return ""
    missing = (error.name or "").split(".")[0]
    if isinstance(error, ModuleNotFoundError) and missing in _A1111_MODEL_CODE:
        return (f"it needs {_A1111_MODEL_CODE[missing]}, which this web UI does not have: it runs on diffusers. "
                "Extensions that rewrite the model itself cannot work here yet")
    if (error.name or "").startswith("modules.") and "cannot import name" in str(error):
        attribute = str(error).split("'")[1]
        try:
            import importlib

            getattr(importlib.import_module(error.name), attribute)
        except MissingA1111Name as reason:
            return str(reason).split(", which does not exist here", 1)[-1].lstrip(": ")
        except Exception:   # noqa: BLE001 - only a better message is at stake
            return ""
    return ""
