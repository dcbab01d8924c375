"""A1111's `modules.deepbooru`, for extensions: `model.tag(image)` / `model.tag_multi(image, force_disable_ranks)`
→ DeepBooru's tags with A1111's tag settings (the server's Interrogator, `modules/postprocess/interrogate/`).
Loading is the server's, so `load`/`start`/`stop` do nothing here."""
from __future__ import annotations

from modules.addons.interrogation import interrogate as _interrogate
from modules.addons.missing_names import missing_name


class DeepDanbooru:
    def tag(self, pil_image) -> str:
        return _interrogate(pil_image, "deepdanbooru")

    def tag_multi(self, pil_image, force_disable_ranks: bool = False) -> str:
        return _interrogate(pil_image, "deepdanbooru",
                            {"interrogate_return_ranks": False} if force_disable_ranks else None)

    def load(self) -> None:
        """The server loads the model on first use."""

    start = stop = load


model = DeepDanbooru()


def __getattr__(name: str):
    raise missing_name("modules.deepbooru", name)
