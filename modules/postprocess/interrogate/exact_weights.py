"""Loading a converted state dict into a freshly built transformers model only when it fits exactly: every tensor
the model has, each of its shape. A file of another model is then named in a JobError before anything runs,
instead of a model half filled with random weights."""
from __future__ import annotations

import torch

from modules.jobs import JobError


def load_exact(model: torch.nn.Module, renamed: dict[str, torch.Tensor], mismatch: str) -> None:
    """`model` filled from `renamed` (keys it lacks are ignored); `mismatch` begins the error when it does not fit,
    e.g. "<file>: not an OpenAI CLIP model"."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(renamed))
    wrong = sorted(key for key in expected.keys() & renamed.keys() if expected[key].shape != renamed[key].shape)
    if missing or wrong:
        raise JobError(f"{mismatch} ({len(missing)} tensors missing, e.g. {missing[:2]}; "
                       f"{len(wrong)} of another shape, e.g. {wrong[:2]})")
    model.load_state_dict({key: renamed[key] for key in expected}, strict=True)
