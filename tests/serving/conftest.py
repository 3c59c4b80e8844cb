"""Fixtures for the server tests: a small 28x28 run, trained once per session, and its app."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time

import numpy as np
import pytest

from .run28 import make_run28


@pytest.fixture(scope="session")
def run28(tmp_path_factory):
    """A complete run of the tutorial MLP on 28x28 digits (see ``run28.make_run28``)."""
    return make_run28(tmp_path_factory)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, limits=None):
    """``app`` under a real uvicorn on a free loopback port, configured as ``mnistlab serve``
    configures it (``server_config``), in a thread; yields ``(host, port)``."""
    import uvicorn

    from mnistlab.serving.server import server_config

    port = free_port()
    srv = uvicorn.Server(server_config(app, "127.0.0.1", port, limits=limits))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
