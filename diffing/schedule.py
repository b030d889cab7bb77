"""The learning-rate schedule of the toolkit's training loops: linear warm-up, then a decay.

Crosscoders decay linearly to 0 over the last part of the run (the dictionary_learning
recipe); the model organisms decay along a cosine to a floor (a language-model
pre-training recipe). One function holds both so the loops cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Literal


def lr_at(
    step: int,
    total: int,
    peak: float,
    warmup: int,
    *,
    shape: Literal["linear", "cosine"] = "linear",
    decay_frac: float = 1.0,
    floor: float = 0.0,
) -> float:
    """Learning rate at ``step`` (0-based) of ``total``.

    Warm-up: ``peak * (step + 1) / warmup`` for the first ``warmup`` steps. Then ``linear``
    falls to 0 over the last ``decay_frac * total`` steps, and ``cosine`` falls from
    ``peak`` to ``floor * peak`` over the steps after the warm-up.
    """
    if shape == "linear":
        warm = min(1.0, (step + 1) / max(1, warmup))
        span = decay_frac * total
        return peak * warm * (min(1.0, (total - step) / span) if span > 0 else 1.0)
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))
