"""Keras' initial weights reproduced without Keras (``engine.init``): every bit."""

import keras
import numpy as np
import pytest

from mnistlab.config import load_config
from mnistlab.engine.init import glorot_uniform, mlp_weights, uniform
from mnistlab.model import build_model


@pytest.mark.parametrize("seed", [0, 1, 111, 2**31 - 1])
def test_uniform_equals_keras_random_uniform(seed):
    want = np.asarray(keras.random.uniform((300_000,), -0.0837, 0.0837, seed=seed))
    got = uniform(seed, (300_000,), -0.0837, 0.0837)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_glorot_uniform_equals_keras_for_a_large_kernel():
    want = keras.initializers.GlorotUniform(seed=5)((3000, 2000))
    assert np.array_equal(glorot_uniform(5, 3000, 2000), np.asarray(want))


@pytest.mark.parametrize("overrides, shape", [
    ([], (28, 28)),
    (["model.hidden=[7, 5]", 'model.activation="tanh"'], (8, 8)),
    (['model.api="functional"', "model.hidden=[300]"], (28, 28)),
])
@pytest.mark.parametrize("seed", [0, 111, 2**31 - 1000])
def test_mlp_weights_equal_the_built_model(overrides, shape, seed):
    cfg = load_config("tutorial", overrides=overrides).model
    model = build_model(cfg, shape, 10, seed=seed)
    want = [np.asarray(v.value) for v in model.variables]
    got = mlp_weights(cfg.hidden, int(np.prod(shape)), 10, seed)
    assert len(got) == len(want)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(got, want, strict=True))
