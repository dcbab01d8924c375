"""A1111's `modules.gfpgan_model`: `gfpgan_fix_faces(np_image)` and `gfpgan_face_restorer`, the server's GFPGAN."""
from __future__ import annotations

import numpy as np

from modules.face_restoration import ServerRestorer

gfpgan_face_restorer = ServerRestorer("GFPGAN")


def gfpgan_fix_faces(np_image: np.ndarray) -> np.ndarray:
    return gfpgan_face_restorer.restore(np_image)
