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


def test_the_plan_goes_to_arrays_and_back(model):
    from mnistlab.engine.conv_arrays import plan_from_arrays, plan_to_arrays
    from mnistlab.engine.conv_plan import read_plan

    plan = read_plan(model)
    back = plan_from_arrays(plan_to_arrays(plan))
    assert np.array_equal(back.params, plan.params)
    assert np.array_equal(back.layout(8)[0], plan.layout(8)[0])
    assert (back.input_shape, back.classes) == (plan.input_shape, plan.classes)


def _spoiled(model, change):
    from mnistlab.engine.conv_arrays import plan_to_arrays
    from mnistlab.engine.conv_plan import read_plan

    arrays = plan_to_arrays(read_plan(model))
    change(arrays)
    return arrays


@pytest.mark.parametrize("change", [
    lambda a: a.update(conv_params=a["conv_params"][:-1]),  # a parameter missing
    lambda a: a["conv_params"].__setitem__(0, np.nan),
    lambda a: a["conv_specs"].__setitem__((0, 6), 5),  # conv1's filters != its kernel's
    lambda a: a["conv_specs"].__setitem__((1, 4), 99),  # a pool bigger than its input
    lambda a: a["conv_specs"].__setitem__((2, 1), 7),  # conv2's input != the pool's output
    lambda a: a["conv_specs"].__setitem__((0, 0), 9),  # no such layer kind
    lambda a: a["conv_specs"].__setitem__((-1, 11), 1),  # ends in relu, not softmax
    lambda a: a["conv_specs"].__setitem__((0, 9), 4),  # padding without 'same' output
    lambda a: a.update(conv_specs=a["conv_specs"][:, :5]),
    lambda a: a.pop("conv_params"),
])
def test_a_malformed_saved_plan_is_refused_before_it_runs(model, change):
    from mnistlab.engine.conv_arrays import plan_from_arrays
    from mnistlab.errors import ModelError

    with pytest.raises(ModelError, match="saved convnet"):
        plan_from_arrays(_spoiled(model, change))


def test_a_saved_convnet_predictor_runs_without_keras(tmp_path, model):
    import json
    import subprocess
    import sys

    path = tmp_path / "predictor.npz"
    Predictor.from_model(model).save(path)
    x = np.random.default_rng(4).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import json, sys, numpy as np\n"
        "from mnistlab.inference import Predictor\n"
        f"p = Predictor.from_file({str(path)!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"np.save({str(tmp_path / 'p.npy')!r}, p.predict_proba(x))\n"
        "print(json.dumps([type(p.network).__name__, 'keras' in sys.modules, "
        "'jax' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["EngineNetwork", False, False]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"),
                               _keras(model, x.astype(np.float32) / np.float32(255)),
                               rtol=1e-4, atol=1e-6)


def test_without_the_compiled_engine_a_run_predicts_from_its_keras_model(tmp_path, monkeypatch):
    from mnistlab.config import load_config as cfg
    from mnistlab.errors import ModelError
    from mnistlab.training import train

    run = train(cfg("cnn", overrides=["model.conv=[{filters=4, padding=\"same\"}]",
                                      "train.epochs=1"], data__dataset="digits"),
                out=tmp_path, report=False)
    assert run.manifest["predictor"]["file"] == "predictor.npz"
    monkeypatch.setattr(conv_kernels, "compiled_before", lambda: False)
    with pytest.raises(conv_predict.EngineNotReady, match="engine.warm"):
        Predictor.from_file(run.file("predictor.npz"))
    assert issubclass(conv_predict.EngineNotReady, ModelError)  # the CLI's clear-error path
    predictor = Predictor.from_run(run)  # falls back to model.keras, not a 2.5-minute compile
    assert isinstance(predictor.network, conv_predict.KerasNetwork)
    x = np.load(run.path / "predictions.npz")["images"][:10]
    recorded = np.load(run.path / "predictions.npz")["probabilities"][:10]
    np.testing.assert_allclose(predictor.predict_proba(x), recorded, rtol=1e-5, atol=1e-6)
