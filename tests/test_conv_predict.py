"""``Predictor`` on a convnet: the conv engine when it can run the model here, else Keras."""

import logging
import threading

import numpy as np
import pytest

from mnistlab import conv_predict
from mnistlab.backend import import_keras
from mnistlab.config import load_config
from mnistlab.engine import conv_kernels
from mnistlab.inference import Predictor
from mnistlab.model import build_model

pytestmark = pytest.mark.skipif(
    not conv_kernels.compiled_before(),
    reason="the conv kernels are not compiled here (make test compiles them first)",
)


def _model(conv="[{filters=4}, {filters=8}]"):
    import_keras()
    cfg = load_config("cnn", overrides=[f"model.conv={conv}"])
    return build_model(cfg.model, (28, 28), 10, seed=3)


@pytest.fixture(scope="module")
def model():
    m = _model()
    rng = np.random.default_rng(0)
    for v in m.weights:  # trained-looking weights, not the initial ones (zero biases)
        v.assign(np.asarray(v) + rng.normal(0, 0.05, v.shape).astype(np.float32))
    return m


def _keras(model, x):
    return np.asarray(model(x.astype(np.float32), training=False), np.float32)


def test_a_convnet_the_engine_reads_is_predicted_by_the_engine(model):
    predictor = Predictor.from_model(model)
    assert isinstance(predictor.network, conv_predict.EngineNetwork)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (37, 28, 28), dtype=np.uint8)  # 4 chunks of 8 and 5 more
    want = _keras(model, images.astype(np.float32) / np.float32(255))
    np.testing.assert_allclose(predictor.predict_proba(images), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(predictor.predict_proba(images[3]), want[3:4], rtol=1e-4,
                               atol=1e-6)
    unit = images.astype(np.float64) / 255  # floats 0-1, and 0-255 floats
    np.testing.assert_allclose(predictor.predict_proba(unit), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(predictor.predict_proba(images.astype(np.float32)), want,
                               rtol=1e-4, atol=1e-6)


def test_threads_predicting_at_once_get_what_each_would_alone(model):
    predictor = Predictor.from_model(model)
    rng = np.random.default_rng(2)
    batches = [rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (1, 9, 64, 300)]
    alone = [predictor.predict_proba(b) for b in batches]
    got = [[None] * len(batches) for _ in range(4)]

    def work(t):
        for _ in range(5):
            for i, b in enumerate(batches):
                got[t][i] = predictor.predict_proba(b)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t in range(4):
        for a, g in zip(alone, got[t], strict=True):
            assert np.array_equal(a, g)


def test_a_layer_the_engine_refuses_goes_through_keras():
    model = _model("[{filters=4, batch_norm=true}]")  # the engine reads no BatchNormalization
    predictor = Predictor.from_model(model)
    assert isinstance(predictor.network, conv_predict.KerasNetwork)
    x = np.random.default_rng(3).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(predictor.predict_proba(x),
                               _keras(model, x.astype(np.float32) / np.float32(255)),
                               rtol=1e-4, atol=1e-6)


def test_uncompiled_kernels_or_a_disagreeing_engine_mean_keras(model, monkeypatch, caplog):
    monkeypatch.setattr(conv_kernels, "compiled_before", lambda: False)  # nobody waits to compile
    assert isinstance(Predictor.from_model(model).network, conv_predict.KerasNetwork)
    monkeypatch.undo()
    monkeypatch.setattr(conv_predict.EngineNetwork, "predict",
                        lambda self, x, from_255: np.full((len(x), 10), 0.1, np.float32))
    with caplog.at_level(logging.WARNING):
        predictor = Predictor.from_model(model)
    assert isinstance(predictor.network, conv_predict.KerasNetwork)
    assert "disagrees" in caplog.text
