"""The layer plan: one reader of Keras models for training (fit_fast) and prediction (Predictor)."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from mnistlab.engine import Network, prediction_plan, training_plan
from mnistlab.engine.plan import Activation, Dense, Normalize
from mnistlab.errors import ModelError


def model(*middle):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(12, activation="relu"),
         *middle, keras.layers.Dense(5, activation="softmax")]
    )


def test_training_and_prediction_read_the_same_dense_layers():
    m = model(keras.layers.Dropout(0.25))
    train, predict = training_plan(m), prediction_plan(m, flat_input=False)
    assert [d.kernel for d in train] == [d.kernel for d in predict]  # the same Keras variables
    assert [d.dropout for d in train] == [0.0, 0.25]  # the Dropout rate moves onto the next Dense
    assert [d.activation for d in predict] == ["relu", "softmax"]


def test_prediction_keeps_what_training_refuses():
    m = model(keras.layers.GaussianNoise(0.1), keras.layers.BatchNormalization(),
              keras.layers.Activation("selu"))
    steps = prediction_plan(m, flat_input=False)
    assert [type(s) for s in steps] == [Dense, Normalize, Activation, Dense]
    with pytest.raises(ModelError, match="GaussianNoise"):
        training_plan(m)
    x = np.random.default_rng(1).random((3, 64), dtype=np.float32)
    got = Network(steps, 64).predict(x, from_255=False)
    np.testing.assert_allclose(got, m(x.reshape(3, 8, 8), training=False), rtol=1e-4, atol=1e-6)


def test_training_refuses_two_dropouts_in_a_row_and_one_after_the_output():
    with pytest.raises(ModelError, match="two in a row"):
        training_plan(model(keras.layers.Dropout(0.1), keras.layers.Dropout(0.1)))
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax"),
                          keras.layers.Dropout(0.5)])
    with pytest.raises(ModelError, match="after the output"):
        training_plan(m)


def test_prediction_refuses_unsupported_layers_in_its_own_words():
    m = model(keras.layers.LeakyReLU())
    with pytest.raises(ModelError, match="LeakyReLU.*not supported by the numpy predictor"):
        prediction_plan(m, flat_input=False)
    with pytest.raises(ModelError, match="Flatten"):
        prediction_plan(keras.Sequential([keras.Input((8, 8)), keras.layers.Dense(3)]), False)


def test_importing_the_engine_and_its_kernels_loads_no_keras_jax_or_numba():
    code = (
        "import sys, mnistlab.engine, mnistlab.engine.kernels, mnistlab.engine.forward\n"
        "print(sorted(m for m in ('keras', 'jax', 'numba', 'llvmlite', 'tensorflow') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
