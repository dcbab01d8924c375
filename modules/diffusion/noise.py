"""Seeds as A1111 resolves them: -1 (or any negative) is a random seed. The noise itself is rng.py's."""
from __future__ import annotations

import random

MAX_SEED = 2**32 - 1


def resolve_seed(seed: int) -> int:
    """-1 (or any negative) means random, as in A1111."""
    return random.randint(0, MAX_SEED) if seed is None or seed < 0 else int(seed)
