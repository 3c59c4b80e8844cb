"""Model files from anywhere: plain Keras models load, unsafe or broken ones are refused clearly."""

import numpy as np
import pytest

from mnistlab.errors import ModelError
from mnistlab.modelfile import load_model_file


def _plain_keras_model(input_shape=(8, 8)):
    import keras

    inp = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, x)


def test_plain_keras_model_evaluates_in_mnistlab(tmp_path):
    from mnistlab.evaluation import evaluate

    path = tmp_path / "plain.keras"
    _plain_keras_model().save(path)
    metrics, text = evaluate(model_path=path, dataset="digits")
    assert metrics["n_test"] == 360 and "accuracy" in text


def test_lambda_layer_is_refused(tmp_path):
    import keras

    inp = keras.Input(shape=(8, 8))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Lambda(lambda t: t * 2)(x)
    out = keras.layers.Dense(10)(x)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ModelError, match="Lambda"):
        load_model_file(path)


@pytest.mark.parametrize("cut", [0, 10, 0.5])
def test_truncated_or_empty_file_gets_an_honest_message(tmp_path, cut):
    path = tmp_path / "m.keras"
    _plain_keras_model().save(path)
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    path.write_bytes(data[:n])
    with pytest.raises(ModelError) as e:
        load_model_file(path)
    assert "not found" not in str(e.value).lower()
    assert "empty" in str(e.value) or "truncated" in str(e.value) or "not a Keras" in str(e.value)


def test_not_a_model_and_missing(tmp_path):
    p = tmp_path / "x.keras"
    p.write_text("hello")
    with pytest.raises(ModelError, match="not a Keras model file"):
        load_model_file(p)
    with pytest.raises(ModelError, match="not found"):
        load_model_file(tmp_path / "missing.keras")


def test_h5_from_plain_keras_loads(tmp_path):
    import warnings

    path = tmp_path / "plain.h5"
    model = _plain_keras_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    loaded = load_model_file(path)
    x = np.zeros((1, 8, 8), np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
