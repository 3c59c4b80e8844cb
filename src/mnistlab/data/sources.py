"""Named dataset sources. (Temporary: only ``digits`` until the data layer lands.)"""

from __future__ import annotations

import numpy as np

from mnistlab.data import Dataset
from mnistlab.errors import DataError


def load_named(name: str, mirrors=()) -> Dataset:
    if name == "digits":
        return load_digits()
    raise DataError(f"dataset {name!r} is not available yet")


def load_path(path: str) -> Dataset:
    raise DataError(f"--data is not available yet: {path}")


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    n_test = 360
    te, tr = order[:n_test], order[n_test:]
    return Dataset("digits", x[tr], y[tr], x[te], y[te], source="sklearn.datasets.load_digits",
                   notes="no official test split: 360 images held out with seed 0")
