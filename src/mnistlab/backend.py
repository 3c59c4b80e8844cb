"""Keras backend housekeeping shared by training and model loading."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def without_tensorflow():
    """On the JAX backend, keep Keras from importing TensorFlow just to save or load a model.

    When (de)serialising, Keras asks whether TensorFlow is available (to recognise TF shapes and
    dtypes), which imports all of it if it is installed: about 3 s and 600 MB for a model that
    never touches TensorFlow. A ``None`` entry in ``sys.modules`` (Python's documented way to
    block an import) makes Keras see what it sees on an install without TensorFlow. The block is
    lifted afterwards, so later code in the process can still import TensorFlow itself.
    """
    import keras

    if keras.backend.backend() != "jax" or "tensorflow" in sys.modules:
        yield
        return
    sys.modules["tensorflow"] = None
    try:
        yield
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]
