"""Fixtures for the server tests: a small 28x28 run, trained once per session, and its app."""

from __future__ import annotations

import io

import numpy as np
import pytest


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


@pytest.fixture(scope="session")
def run28(tmp_path_factory):
    """A complete run of the tutorial MLP on 28x28 digits (a few epochs of Adam, no report)."""
    from mnistlab.config import load_config
    from mnistlab.data import Dataset
    from mnistlab.training import train

    x, y = digits28()
    ds = Dataset("digits28", x[:1500], y[:1500], x[1500:], y[1500:], source="tests: sklearn "
                 "digits scaled to 28x28")
    cfg = load_config(overrides=["train.epochs=4", "train.optimizer='adam'",
                                 "train.learning_rate=0.003"])
    return train(cfg, dataset=ds, out=tmp_path_factory.mktemp("runs"), command=["test"],
                 report=False)


@pytest.fixture(scope="session")
def test_digits(run28):
    """The run's own test images and labels: uint8 ``(M, 28, 28)``, int64 ``(M,)``."""
    with np.load(run28.path / "predictions.npz", allow_pickle=False) as f:
        return f["images"], f["labels"]


@pytest.fixture(scope="session")
def app(run28):
    from mnistlab.serving.app import create_app

    return create_app(run28.path)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode a uint8 array as an image file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


def photo_of(digit: np.ndarray, scale: int = 10) -> bytes:
    """A 'photo' of a 28x28 white-on-black digit: dark ink on white paper, ``scale`` times larger."""
    big = np.kron(digit, np.ones((scale, scale), np.uint8))
    return png_bytes(255 - big)
