"""Runs that start training before Keras is loaded (``mnistlab.headstart``) end with the same bits
as runs trained through ``fit_fast`` on the Keras model."""

import os
import re
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
    templates = tmp_path / "templates"
    cfg = _cfg(*overrides)
    assert starts_without_keras(cfg)
    monkeypatch.setenv("MNISTLAB_KERAS_FILES", "off")
    head = train(cfg, out=tmp_path / "head", report=False)  # Keras loads beside the epochs
    monkeypatch.setenv("MNISTLAB_KERAS_FILES", str(templates))
    # One epoch (other weights, the same model): imports Keras and keeps a template of its files
    first = train(_cfg(*overrides, "train.epochs=1"), out=tmp_path / "first", report=False)
    assert len(list(templates.iterdir())) == 1
    free = train(cfg, out=tmp_path / "free", report=False)  # Keras' files from the template
    monkeypatch.setattr(training, "starts_without_keras", lambda config: False)
    keras_run = train(cfg, out=tmp_path / "keras", report=False)

    assert head.manifest["engine"]["started_without_keras"] is True
    assert "started_without_keras" not in keras_run.manifest["engine"]
    assert [r.manifest["model_files"] for r in (head, first, free, keras_run)] == [
        "keras", "keras", "template", "keras"]
    assert compare_weights(head.load_model(), keras_run.load_model())
    assert compare_weights(free.load_model(), keras_run.load_model())
    for run in (head, free):
        assert run.metrics["test_loss"] == keras_run.metrics["test_loss"]
        assert run.metrics["confusion_matrix"] == keras_run.metrics["confusion_matrix"]
        assert run.manifest["params"] == keras_run.manifest["params"]
        # every file the same bytes as Keras wrote (model.keras: but its date_saved)
        for name in ("model.h5", "architecture.json", "architecture.yaml", "summary.txt",
                     "predictor.npz", "predictions.npz", "classification_report.txt"):
            assert (run.path / name).read_bytes() == (keras_run.path / name).read_bytes(), name
        assert _members(run.path / "model.keras") == _members(keras_run.path / "model.keras")
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


def test_a_run_with_a_template_imports_neither_keras_nor_jax(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from mnistlab.config import load_config; "
            "from mnistlab.training import train; "
            "cfg = load_config(overrides=['train.epochs=2'], data__dataset='digits'); "
            "run = train(cfg, out=sys.argv[1], report=False); "
            "print(run.manifest['model_files'], 'keras' in sys.modules, 'jax' in sys.modules, "
            "run.metrics['test_loss'])")
    env = {**os.environ, "MNISTLAB_KERAS_FILES": str(tmp_path / "templates")}
    outs = [subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], env=env,
                           capture_output=True, text=True, check=True).stdout.split()[-4:]
            for _ in range(2)]
    assert [o[:3] for o in outs] == [["keras", "True", "True"], ["template", "False", "False"]]
    assert outs[0][3] == outs[1][3]  # the same test loss, to the last digit


def test_a_damaged_template_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_KERAS_FILES", str(tmp_path / "templates"))
    first = train(_cfg("train.epochs=1"), out=tmp_path / "first", report=False)
    (folder,) = (tmp_path / "templates").iterdir()
    layout = folder / "layout.json"
    text = layout.read_text()
    layout.write_text(text[: len(text) // 2])  # cut short: not JSON
    again = train(_cfg("train.epochs=1"), out=tmp_path / "again", report=False)
    assert again.manifest["model_files"] == "keras"
    assert (first.path / "model.h5").read_bytes() == (again.path / "model.h5").read_bytes()
    assert layout.read_text() == text  # that run kept a whole template again
    layout.write_text(re.sub(r'"model.h5": \d+', '"model.h5": 99999999', text, count=1))  # past the end
    third = train(_cfg("train.epochs=1"), out=tmp_path / "third", report=False)
    assert third.manifest["model_files"] == "keras" and layout.read_text() == text
    fourth = train(_cfg("train.epochs=1"), out=tmp_path / "fourth", report=False)
    assert fourth.manifest["model_files"] == "template"
    assert (first.path / "model.h5").read_bytes() == (fourth.path / "model.h5").read_bytes()


def _members(path) -> dict:
    import json
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    metadata = json.loads(members.pop("metadata.json"))
    assert sorted(metadata) == ["date_saved", "keras_version"]
    # Keras numbers an object used in several places by its id() in the saving process: the
    # same structure, other numbers in another process (numbered here by first appearance)
    ids: dict[bytes, bytes] = {}
    members["config.json"] = re.sub(
        rb'"shared_object_id": (\d+)',
        lambda m: b'"shared_object_id": %d' % ids.setdefault(m[1], len(ids)),
        members["config.json"])
    assert ids, "no shared object numbered: the check above proves nothing"
    return {**members, "keras_version": metadata["keras_version"]}


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
    monkeypatch.setenv("MNISTLAB_KERAS_FILES", "off")  # Keras is needed: no template
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
    monkeypatch.setenv("MNISTLAB_KERAS_FILES", "off")  # Keras loads beside the epochs
    run = train(_cfg(), out=tmp_path, report=False)
    engine = run.manifest["engine"]
    assert engine["threads_used"][0] == first_epoch_threads, engine
    assert engine["keras_import_yielded"] is (first_epoch_threads == 1), engine
