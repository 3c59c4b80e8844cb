"""Tiny dataset files the data tests write themselves (their own IDX writer, not the library's)."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field

import numpy as np


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The test's own IDX writer: big-endian magic, big-endian uint32 dims, raw uint8 data."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0801 if array.ndim == 1 else 0x0803
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx_dir(directory, x_train, y_train, x_test, y_test, gz: bool = True):
    """Write the four standard IDX files (gzipped or raw) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": x_train,
        "train-labels-idx1-ubyte": y_train,
        "t10k-images-idx3-ubyte": x_test,
        "t10k-labels-idx1-ubyte": y_test,
    }
    for name, array in parts.items():
        data = idx_bytes(array)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return directory


def tiny_arrays(n_train=20, n_test=10, size=(5, 4), classes=10, seed=0):
    """Random uint8 images and int labels covering every class."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (n_train, *size), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, *size), dtype=np.uint8)
    y_train = (np.arange(n_train) % classes).astype(np.uint8)
    y_test = (np.arange(n_test) % classes).astype(np.uint8)
    return x_train, y_train, x_test, y_test


@dataclass
class Route:
    """What the server answers for one path."""

    body: bytes = b""
    status: int = 200
    extra_length: int = 0  # announce this many bytes more than sent, then close (cut transfer)
    length: bool = True  # send a Content-Length header (without one, the end is the close)
    barrier: threading.Barrier | None = None  # wait for N requests before sending the body


@dataclass
class Server:
    """A threaded http.server on 127.0.0.1 with a random port, counting requests per path."""

    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
