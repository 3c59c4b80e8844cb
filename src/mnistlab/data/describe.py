"""Text description of a dataset, in the tutorial's words (shapes first)."""

from __future__ import annotations

import math

import numpy as np

from mnistlab.data import Dataset


def describe(ds: Dataset, val_fraction: float = 0.3) -> str:
    """Return the tutorial-style shapes, class counts, source and sha256 of ``ds``.

    Args:
        ds: the dataset.
        val_fraction: validation share used to show the shapes after the tutorial's split.

    Returns:
        Lines of text joined by newlines, no trailing newline.
    """
    n_val = math.ceil(len(ds.y_train) * val_fraction)  # as train_test_split rounds
    n_tr = len(ds.y_train) - n_val
    h, w = ds.image_shape
    lines = [
        f"dataset: {ds.name}",
        f"source:  {ds.source}",
        f"x_train: {ds.x_train.shape} {ds.x_train.dtype}   y_train: {ds.y_train.shape}",
        f"x_test:  {ds.x_test.shape} {ds.x_test.dtype}   y_test: {ds.y_test.shape}",
        f"after a {val_fraction:.0%} validation split: train ({n_tr}, {h}, {w}), "
        f"validation ({n_val}, {h}, {w})",
        f"pixels:  {ds.x_train.min()}..{ds.x_train.max()}   classes: {ds.num_classes}   "
        f"input size when flattened: {h * w}",
    ]
    counts_tr = np.bincount(ds.y_train, minlength=ds.num_classes)
    counts_te = np.bincount(ds.y_test, minlength=ds.num_classes)
    lines.append("class counts (train / test):")
    for i, name in enumerate(ds.class_names):
        lines.append(f"  {i} {name:>12}: {counts_tr[i]:6d} / {counts_te[i]:6d}")
    for fname, digest in ds.sha256.items():
        lines.append(f"sha256 {fname}: {digest}")
    if ds.notes:
        lines.append(f"note: {ds.notes}")
    return "\n".join(lines)
