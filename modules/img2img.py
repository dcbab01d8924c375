"""A1111's `modules.img2img`, for extensions that import it (agent-scheduler queues UI tasks through it).

A1111's `img2img(id_task, request, mode, prompt, ...)` takes the values of A1111's own img2img tab components, in
their order. This web UI's tab has other components, so those values cannot be read honestly: the name exists,
so that such extensions load, and calling it is an error that says what to use instead — an img2img request
through `modules.api.api.Api().img2imgapi(StableDiffusionImg2ImgProcessingAPI(...))`, or
`processing.process_images(p)` inside a script.
"""
from __future__ import annotations

from modules.addons.missing_names import missing_name

_INSTEAD = ("it takes A1111's img2img tab component values, which this web UI's tab does not have; use "
            "modules.api.api.Api(app).img2imgapi(modules.api.models.StableDiffusionImg2ImgProcessingAPI(...)), "
            "or processing.process_images(p) inside a script")


def img2img(id_task: str, request, *args):
    raise missing_name("modules.img2img", "img2img", _INSTEAD)


def __getattr__(name: str):
    raise missing_name("modules.img2img", name, _INSTEAD if name.startswith(("img2img", "process_batch")) else "")
