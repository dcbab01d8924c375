"""A1111's `modules.txt2img`, for extensions that import it (agent-scheduler queues UI tasks through it).

A1111's `txt2img(id_task, request, *args)` takes the values of A1111's own txt2img tab components, in their order
(the sampler, steps and seed among its built-in scripts' arguments). This web UI's tab has other components, so
those values cannot be read honestly: the name exists, so that such extensions load, and calling it is an error
that says what to use instead — a txt2img request through `modules.api.api.Api().text2imgapi(
StableDiffusionTxt2ImgProcessingAPI(...))`, or `processing.process_images(p)` inside a script.
"""
from __future__ import annotations

from modules.addons.missing_names import missing_name

_INSTEAD = ("it takes A1111's txt2img tab component values, which this web UI's tab does not have; use "
            "modules.api.api.Api(app).text2imgapi(modules.api.models.StableDiffusionTxt2ImgProcessingAPI(...)), "
            "or processing.process_images(p) inside a script")


def txt2img(id_task: str, request, *args):
    raise missing_name("modules.txt2img", "txt2img", _INSTEAD)


def __getattr__(name: str):
    raise missing_name("modules.txt2img", name, _INSTEAD if name.startswith("txt2img") else "")
