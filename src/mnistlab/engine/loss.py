"""Keras' categorical cross-entropy on probabilities, as the loops and the evaluation compute it."""

from __future__ import annotations

import numpy as np

EPSILON = 1e-7  # keras.backend.epsilon(): probabilities are clipped to [EPSILON, 1 - EPSILON]
LO, HI = np.float32(EPSILON), np.float32(1 - EPSILON)


def cross_entropy(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Keras' categorical cross-entropy per sample: float32 ``(N,)`` from probabilities
    ``(N, C)`` and int labels ``(N,)``."""
    pt = np.take_along_axis(p, y[:, None], 1)[:, 0] / p.sum(1)
    return -np.log(np.clip(pt, LO, HI))
