"""Runs that start training before Keras is loaded (``mnistlab.headstart``) end with the same bits
as runs trained through ``fit_fast`` on the Keras model."""

import os
import threading

import numpy as np
import pytest

from mnistlab import training
from mnistlab.checkpoint import FILE
from mnistlab.config import load_config
from mnistlab.errors import ConfigError
from mnistlab.files import load_npz
from mnistlab.headstart import starts_without_keras
from mnistlab.training import compare_weights, train


def _cfg(*overrides):
    return load_config(overrides=["train.epochs=3", *overrides], data__dataset="digits")


@pytest.mark.parametrize("overrides", [
    [],
    ["train.momentum=0.9", "train.nesterov=true", 'model.activation="tanh"', "model.hidden=[40]"],
    ["train.momentum=0.5", 'model.api="functional"', "train.shuffle=false"],
], ids=["tutorial", "nesterov-tanh", "momentum-functional"])
def test_same_bits_as_training_the_keras_model(tmp_path, monkeypatch, overrides):
    cfg = _cfg(*overrides)
    assert starts_without_keras(cfg)
    head = train(cfg, out=tmp_path / "head", report=False)
    monkeypatch.setattr(training, "starts_without_keras", lambda config: False)
    keras_run = train(cfg, out=tmp_path / "keras", report=False)

    assert head.manifest["engine"]["started_without_keras"] is True
    assert "started_without_keras" not in keras_run.manifest["engine"]
    assert compare_weights(head.load_model(), keras_run.load_model())
    assert head.metrics["test_loss"] == keras_run.metrics["test_loss"]
    assert head.manifest["params"] == keras_run.manifest["params"]
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in head.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in keras_run.history]
    # The checkpoints hold the same arrays (weights, step count, learning rate, momentums; the
    # history's seconds aside): resume reads either.
    a, b = load_npz(head.path / FILE), load_npz(keras_run.path / FILE)
    assert sorted(a) == sorted(b)
    for key in a:
        if key == "history":
            np.testing.assert_array_equal(a[key][:, :-1], b[key][:, :-1])
        else:
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    n_train = len(load_npz(head.path / "split.npz")["train_idx"])
    assert int(a["opt_0"]) == 3 * -(-n_train // 128)  # the step count after 3 epochs


def test_what_starts_without_keras():
    assert starts_without_keras(_cfg())
    for other in (["model.dropout=0.2"], ['train.optimizer="adam"'], ['train.schedule="cosine"'],
                  ["augment.shift=0.1"], ['model.kind="cnn"'], ['train.loop="fit"'],
                  ['model.activation="gelu"'], ["train.label_smoothing=0.1"]):
        assert not starts_without_keras(_cfg(*other)), other


def test_an_error_building_the_keras_model_reaches_the_caller(tmp_path, monkeypatch):
    import mnistlab.model

    def broken(*args, **kwargs):
        raise ConfigError("no model today; fix the config")

    monkeypatch.setattr(mnistlab.model, "build_model", broken)
    with pytest.raises(ConfigError, match="no model today"):
        train(_cfg(), out=tmp_path, report=False)


def _nice(thread_id: int) -> int:
    with open(f"/proc/self/task/{thread_id}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])  # field 19: nice


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread priority here")
def test_a_yielding_import_gets_nice_19_and_the_rest_keep_theirs():
    from mnistlab.headstart import _yield_to_training

    hold = threading.Event()
    thread = threading.Thread(target=hold.wait)
    thread.start()
    try:
        before = _nice(threading.get_native_id())
        assert _nice(thread.native_id) == before
        assert _yield_to_training(thread)
        assert _nice(thread.native_id) == 19 and _nice(threading.get_native_id()) == before
    finally:
        hold.set()
        thread.join()


@pytest.mark.parametrize("first_epoch_threads", [1, 2])
def test_the_import_yields_only_when_two_threads_lost(tmp_path, monkeypatch, first_epoch_threads):
    # The loop picks one thread for the first epoch as it does beside a busy process (two
    # threads slower than one); on an idle machine it picks two, and the import keeps its nice.
    from mnistlab.engine import kernels
    from mnistlab.engine.sgd_loop import SgdLoop

    if kernels.parallel_threads() < 2:
        pytest.skip("one core here: the loop never tries two threads")
    monkeypatch.setattr(SgdLoop, "_choose", lambda self: first_epoch_threads == 2)
    run = train(_cfg(), out=tmp_path, report=False)
    engine = run.manifest["engine"]
    assert engine["threads_used"][0] == first_epoch_threads, engine
    assert engine["keras_import_yielded"] is (first_epoch_threads == 1), engine
