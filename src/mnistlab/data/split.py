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
    return _stratified_split(np.asarray(labels), val_fraction, seed)


def _shuffle_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What ``train_test_split(range(n), test_size=val_fraction, random_state=seed)`` returns:
    the held-out part is the first ``ceil(n * val_fraction)`` of one ``RandomState(seed)``
    permutation, the training part the rest, in that order."""
    import math

    n_val = math.ceil(val_fraction * n)
    order = np.random.RandomState(seed).permutation(n).astype(np.int64)
    return order[n_val:], order[:n_val]


def _stratified_split(labels: np.ndarray, val_fraction: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What ``train_test_split(range(n), test_size=val_fraction, random_state=seed,
    stratify=labels)`` returns (sklearn's ``StratifiedShuffleSplit``, step by step with the same
    ``RandomState`` draws), without importing sklearn: that took ~1.2 s of every run on a dataset
    whose test part is held out this way (``mnist_sample``, ``make run``'s offline fallback)."""
    import math

    n = len(labels)
    n_val = math.ceil(val_fraction * n)
    n_train = n - n_val
    classes, label_idx, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        single = classes[counts < 2].tolist()
        raise DataError(f"cannot split the training data by class: class(es) {single} have a "
                        "single image, and each class needs 2. Try data.stratify=false")
    if min(n_train, n_val) < len(classes):
        raise DataError(f"cannot split the training data by class: {n_train} training and "
                        f"{n_val} validation images cannot each hold all {len(classes)} classes. "
                        "Try data.stratify=false")
    by_class = np.split(np.argsort(label_idx.ravel(), kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_val, rng)
    train, val = [], []
    for i in range(len(classes)):
        shuffled = by_class[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(shuffled[: n_i[i]])
        val.extend(shuffled[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train).astype(np.int64), rng.permutation(val).astype(np.int64)


def _approximate_mode(counts: np.ndarray, n_draws: int, rng) -> np.ndarray:
    """sklearn's ``utils.extmath._approximate_mode``: how many of ``n_draws`` to take from each
    class, in proportion to ``counts`` (floored), the rest to the largest remainders, ties broken
    by ``rng``."""
    continuous = counts / counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            take = min(len(inds), need)
            floored[rng.choice(inds, size=take, replace=False)] += 1
            need -= take
            if need == 0:
                break
    return floored.astype(int)
