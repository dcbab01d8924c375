"""A1111's `modules.codeformer_model`: `codeformer.restore(np_image, w=weight)`, the server's CodeFormer."""
from __future__ import annotations

from modules.face_restoration import ServerRestorer

codeformer = ServerRestorer("CodeFormer")
