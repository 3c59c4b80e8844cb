"""Shared fixtures: a tiny trained run on sklearn's digits, made once per session."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
# JAX's compilation cache, shared by this session's processes but not with the user's own.
os.environ.setdefault("MNISTLAB_JAX_CACHE", tempfile.mkdtemp(prefix="mnistlab-test-jax-"))
# Templates of Keras' model files (mnistlab.keras_files): this session's own, not the user's.
os.environ.setdefault("MNISTLAB_KERAS_FILES", tempfile.mkdtemp(prefix="mnistlab-test-keras-files-"))


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A complete 2-epoch run on the 8x8 digits dataset (no report)."""
    from mnistlab.config import load_config
    from mnistlab.training import train

    cfg = load_config(overrides=["train.epochs=2"], data__dataset="digits")
    return train(cfg, out=tmp_path_factory.mktemp("runs"), command=["test"], report=False)
