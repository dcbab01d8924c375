"""A1111's `modules.face_restoration`: `FaceRestoration` (a restorer: `name()`, `restore(np_image)`), the restorers
this server can run (`restorers()`, also `shared.face_restorers`) and `restore_faces(np_image)`. The work is the
project's face restoration (`postprocess/face_restoration.py`); a restorer whose model file is missing raises
its message naming the file."""
from __future__ import annotations

import numpy as np
from PIL import Image

from modules.addons.running import services
from modules.postprocess.face_restoration import MODEL_FILES


class FaceRestoration:
    """A1111's base class; `restore` returns the image unchanged (A1111's "None" restorer)."""

    def name(self) -> str:
        return "None"

    def restore(self, np_image: np.ndarray) -> np.ndarray:
        return np_image


class ServerRestorer(FaceRestoration):
    """One of the server's restorers (GFPGAN, CodeFormer), at full visibility, run with its own model file."""

    def __init__(self, model_name: str):
        self.model_name = model_name

    def name(self) -> str:
        return self.model_name

    def restore(self, np_image: np.ndarray, w: float | None = None) -> np.ndarray:
        weight = float(services().options.code_former_weight) if w is None else float(w)
        restored = services().restorers.restore(Image.fromarray(np.asarray(np_image, dtype=np.uint8)),
                                                        self.model_name, 1.0, codeformer_weight=weight)
        return np.asarray(restored.convert("RGB"))


def restorers() -> list[FaceRestoration]:
    """The restorers A1111 lists (CodeFormer, GFPGAN); using one whose model file is missing raises a message
    naming the file."""
    return [ServerRestorer(name) for name in sorted(MODEL_FILES)]


def restore_faces(np_image: np.ndarray) -> np.ndarray:
    """A1111's: restore with the restorer the settings name (`face_restoration_model`)."""
    chosen = str(services().options.face_restoration_model)
    picked = next((restorer for restorer in restorers() if restorer.name() == chosen), None)
    return picked.restore(np_image) if picked is not None else np_image
