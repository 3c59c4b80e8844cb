"""Seeded train/validation split that returns indices, so runs can save and reuse them."""

from __future__ import annotations

import numpy as np

from mnistlab.errors import DataError


def split_train_val(
    labels: np.ndarray, val_fraction: float = 0.3, seed: int = 111, stratify: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into train and validation indices.

    Matches the tutorial's ``train_test_split(x, y, test_size=0.3, random_state=111)``: the same
    seed and fraction select exactly the same images.

    Args:
        labels: int array ``(N,)``.
        val_fraction: share held out for validation, ``0 < val_fraction < 1``.
        seed: ``random_state`` for the shuffle.
        stratify: keep class proportions equal in both parts.

    Returns:
        ``(train_idx, val_idx)``, int64 arrays in the order ``train_test_split`` gives.

    Raises:
        DataError: too few samples to make both parts non-empty.
    """
    n = len(labels)
    if n < 2 or round(n * val_fraction) < 1 or n - round(n * val_fraction) < 1:
        raise DataError(
            f"cannot hold out {val_fraction:.0%} of {n} training images for validation: "
            "both parts would not be non-empty. Use more data or change data.val_fraction"
        )
    if not stratify:  # sklearn's ShuffleSplit, without importing sklearn (~1 s)
        return _shuffle_split(n, val_fraction, seed)
    from sklearn.model_selection import train_test_split

    idx = np.arange(n, dtype=np.int64)
    try:
        train_idx, val_idx = train_test_split(
            idx, test_size=val_fraction, random_state=seed, stratify=labels if stratify else None
        )
    except ValueError as e:
        raise DataError(f"cannot split the training data: {e}. Try data.stratify=false") from None
    return train_idx, val_idx


def _shuffle_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What ``train_test_split(range(n), test_size=val_fraction, random_state=seed)`` returns:
    the held-out part is the first ``ceil(n * val_fraction)`` of one ``RandomState(seed)``
    permutation, the training part the rest, in that order."""
    import math

    n_val = math.ceil(val_fraction * n)
    order = np.random.RandomState(seed).permutation(n).astype(np.int64)
    return order[n_val:], order[:n_val]
