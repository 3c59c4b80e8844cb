"""A small trained 28x28 run for the server tests, made once per test session.

Until a 28x28 dataset ships with the package, scikit-learn's 8x8 digits are scaled into
MNIST's layout (a 20x20 box in a 28x28 field) and the tutorial MLP is trained on them for a few
epochs: real digits, a real run directory, a model that reads drawn digits reasonably well.
"""

from __future__ import annotations

import numpy as np


def digits28() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, scaled into MNIST's layout: 20x20 box in a 28x28 field.

    Returns:
        uint8 images ``(1797, 28, 28)`` 0-255 white on black, int64 labels ``(1797,)``.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    out = np.zeros((len(d.images), 28, 28), np.uint8)
    for i, im in enumerate(d.images):
        small = Image.fromarray(np.round(im * (255 / 16)).astype(np.uint8))
        out[i, 4:24, 4:24] = np.asarray(small.resize((20, 20), Image.Resampling.BILINEAR))
    return out, d.target.astype(np.int64)


def make_run28(tmp_path_factory):
    """Return the session's 28x28 run (a ``mnistlab.runs.Run``), training it on first use.

    Shared by tests/serving and tests/e2e through the session's base temporary directory, so
    the whole suite trains it once.
    """
    from mnistlab.runs import list_runs

    root = tmp_path_factory.getbasetemp() / "run28"
    done = [r for r in list_runs(root) if r.is_complete]
    if done:
        return done[0]

    from mnistlab.config import load_config
    from mnistlab.data import Dataset
    from mnistlab.training import train

    x, y = digits28()
    ds = Dataset("digits28", x[:1500], y[:1500], x[1500:], y[1500:],
                 source="tests: sklearn digits scaled to 28x28")
    cfg = load_config(overrides=["train.epochs=4", "train.optimizer='adam'",
                                 "train.learning_rate=0.003"])
    return train(cfg, dataset=ds, out=root, command=["test"], report=False)
