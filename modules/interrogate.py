"""A1111's `modules.interrogate`, for extensions: `InterrogateModels(...).interrogate(image)` → a BLIP caption with
CLIP's category matches (the server's Interrogator, `modules/postprocess/interrogate/`); `shared.interrogator` is
one of these. Loading and unloading are the server's (models are loaded on first use and kept or released by the
`interrogate_keep_models_in_memory` setting), so `load`/`unload`/`send_*_to_ram` do nothing here."""
from __future__ import annotations

from modules.addons.interrogation import interrogate as _interrogate
from modules.addons.missing_names import missing_name


class InterrogateModels:
    def __init__(self, content_dir: str = "interrogate"):
        self.content_dir = content_dir

    def interrogate(self, pil_image) -> str:
        return _interrogate(pil_image, "clip")

    def load(self) -> None:
        """The server loads the models on first use."""

    def unload(self) -> None:
        """The server keeps or releases them (interrogate_keep_models_in_memory)."""

    send_clip_to_ram = send_blip_to_ram = unload

    def __getattr__(self, name: str):
        raise missing_name("modules.interrogate.InterrogateModels", name,
                           "the BLIP and CLIP models are the server's (modules/postprocess/interrogate/)")


def __getattr__(name: str):
    raise missing_name("modules.interrogate", name)
