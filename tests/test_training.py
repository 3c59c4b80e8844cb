"""The tutorial pipeline on real (small) data: run directory, reproducibility, model formats."""

import csv
import json
import math

import numpy as np
import pytest
import yaml

from mnistlab.engine.fit import permutation
from mnistlab.errors import DataError
from mnistlab.files import load_npz
from mnistlab.training import compare_weights, rerun

RUN_FILES = [
    "config.toml", "manifest.json", "split.npz", "samples.npz", "history.csv", "metrics.json",
    "classification_report.txt", "summary.txt", "model.keras", "model.h5", "architecture.json",
    "architecture.yaml", "predictions.npz", "predictor.npz",
]


def test_run_directory_is_complete_and_valid(digits_run):
    for name in RUN_FILES:
        assert (digits_run.path / name).stat().st_size > 0, name
    m = json.loads((digits_run.path / "manifest.json").read_text())
    assert m["status"] == "complete" and m["epochs_done"] == 2 and m["seed"] == 111
    assert m["dataset"]["name"] == "digits" and m["dataset"]["image_shape"] == [8, 8]
    assert m["backend"] == "jax" and m["versions"]["keras"] and m["finished"]
    assert set(m["files"]) == {"model.keras", "model.h5", "predictor.npz"}
    # the tutorial's plain SGD trains on one of fit_fast's SGD paths, and the run says which
    assert m["engine"]["path"] in ("compiled", "numpy") and len(m["engine"]["threads_used"]) == 2
    split = load_npz(digits_run.path / "split.npz")
    tr, va = split["train_idx"], split["val_idx"]
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == m["dataset"]["n_train"] + m["dataset"]["n_val"]
    assert len(va) == math.ceil(0.3 * (len(tr) + len(va)))  # train_test_split rounds up
    with open(digits_run.path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    metrics = json.loads((digits_run.path / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["n_test"] == 360
    assert np.array(metrics["confusion_matrix"]).sum() == 360
    assert set(metrics["per_class"]) == {str(i) for i in range(10)}
    assert "precision" in (digits_run.path / "classification_report.txt").read_text()
    preds = load_npz(digits_run.path / "predictions.npz")
    assert preds["probabilities"].shape == (360, 10) and preds["images"].shape == (360, 8, 8)
    np.testing.assert_allclose(preds["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    assert "87,374" not in (digits_run.path / "summary.txt").read_text()  # 8x8 input: fewer params


def test_split_matches_the_tutorials_train_test_split(digits_run):
    from sklearn.model_selection import train_test_split

    from mnistlab.data import load_dataset

    ds = load_dataset("digits")
    x_tr, x_va, _, _ = train_test_split(ds.x_train, ds.y_train, test_size=0.3, random_state=111)
    split = load_npz(digits_run.path / "split.npz")
    assert np.array_equal(ds.x_train[split["train_idx"]], x_tr)
    assert np.array_equal(ds.x_train[split["val_idx"]], x_va)


@pytest.mark.parametrize("n", [7, 100, 1797, 60_000])
@pytest.mark.parametrize(("fraction", "seed"), [(0.3, 111), (0.1, 0), (0.25, 7), (0.5, 2**31 - 1)])
def test_the_split_without_sklearn_is_train_test_split(n, fraction, seed):
    from sklearn.model_selection import train_test_split

    from mnistlab.data.split import split_train_val

    want_train, want_val = train_test_split(np.arange(n), test_size=fraction, random_state=seed)
    train_idx, val_idx = split_train_val(np.zeros(n, np.int64), fraction, seed)
    assert np.array_equal(train_idx, want_train) and np.array_equal(val_idx, want_val)
    assert train_idx.dtype == val_idx.dtype == np.int64


def _labels(kind, n, rng):
    if kind == "even":  # equal classes: every remainder ties
        return np.arange(n) % 10
    if kind == "skewed":  # class k about k+1 times as common
        return rng.choice(10, n, p=np.arange(1, 11) / 55)
    return rng.choice([3, 7, 11], n)  # labels that are not 0..C-1


@pytest.mark.parametrize("kind", ["even", "skewed", "sparse"])
@pytest.mark.parametrize("n", [40, 101, 1797, 5000])
@pytest.mark.parametrize(("fraction", "seed"), [(0.3, 111), (0.2, 1), (0.05, 7), (0.5, 2**31 - 1)])
def test_the_stratified_split_without_sklearn_is_train_test_split(kind, n, fraction, seed):
    from sklearn.model_selection import train_test_split

    from mnistlab.data.split import split_train_val

    labels = _labels(kind, n, np.random.default_rng(n + seed))
    try:
        want = train_test_split(np.arange(n), test_size=fraction, random_state=seed,
                                stratify=labels)
    except ValueError:  # too few of a class, or too few images for every class in both parts
        with pytest.raises(DataError, match="data.stratify=false"):
            split_train_val(labels, fraction, seed, stratify=True)
        return
    got = split_train_val(labels, fraction, seed, stratify=True)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert got[0].dtype == got[1].dtype == np.int64


def test_a_stratified_split_refuses_a_class_of_one_image():
    from mnistlab.data.split import split_train_val

    with pytest.raises(DataError, match=r"class\(es\) \[9\] have a single image"):
        split_train_val(np.array([0, 0, 1, 1, 0, 1, 9, 0, 1, 0]), 0.3, 1, stratify=True)
    with pytest.raises(DataError, match="cannot each hold all 2 classes"):
        split_train_val(np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 1]), 0.1, 1, stratify=True)


def test_every_epoch_gets_a_new_seeded_order():
    a0, a1 = permutation(111, 0, 1000), permutation(111, 1, 1000)
    assert not np.array_equal(a0, a1)
    assert np.array_equal(a0, permutation(111, 0, 1000))
    assert not np.array_equal(a0, permutation(111, 0, 1000 + 1)[:1000])
    assert not np.array_equal(a0, permutation(112, 0, 1000))


def test_rerun_is_bit_identical(digits_run, tmp_path):
    new, rep = rerun(digits_run.path, out=tmp_path)
    assert rep["weights_identical"] and rep["metrics_identical"]
    assert new.path != digits_run.path


def test_formats_round_trip_to_the_same_predictions(digits_run):
    import keras

    model = digits_run.load_model()
    x = np.random.default_rng(0).random((16, 8, 8), dtype=np.float32)
    ref = np.asarray(model(x))
    h5 = digits_run.load_model("model.h5")
    from_json = keras.models.model_from_json((digits_run.path / "architecture.json").read_text())
    cfg = yaml.safe_load((digits_run.path / "architecture.yaml").read_text())
    from_yaml = keras.models.model_from_json(json.dumps(cfg))
    for m in (from_json, from_yaml):
        m.set_weights(model.get_weights())
    for m in (h5, from_json, from_yaml):
        np.testing.assert_array_equal(np.asarray(m(x)), ref)
    assert compare_weights(model, h5)


def test_plain_keras_loads_our_model(digits_run):
    import keras

    m = keras.saving.load_model(digits_run.path / "model.keras")
    assert [layer.name for layer in m.layers] == ["flatten", "dense1", "dense2", "dense3", "output"]


def test_sha256_mismatch_is_refused(digits_run, tmp_path):
    import shutil

    from mnistlab.errors import ModelError
    from mnistlab.runs import load_run

    copy = tmp_path / "copy"
    shutil.copytree(digits_run.path, copy)
    # Re-written as a valid zip with the same members, deflated: only the sha256 can tell.
    # (Bytes appended to it would be refused earlier, as trailing data.)
    import zipfile

    with zipfile.ZipFile(digits_run.path / "model.keras") as zi, \
            zipfile.ZipFile(copy / "model.keras", "w", zipfile.ZIP_DEFLATED) as zo:
        for name in zi.namelist():
            zo.writestr(name, zi.read(name))
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_run(copy).load_model()


def test_fast_loop_trains_like_keras_fit(tmp_path):
    """Same seed, same per-epoch order: the fast loop and Model.fit give the same model."""
    from mnistlab.config import load_config
    from mnistlab.training import train

    runs = {
        loop: train(load_config(overrides=["train.epochs=3", f"train.loop={loop}"],
                                data__dataset="digits"), out=tmp_path / loop, report=False)
        for loop in ("fast", "fit")
    }
    fast, fit = runs["fast"], runs["fit"]
    for a, b in zip(fast.load_model().get_weights(), fit.load_model().get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose([r["val_loss"] for r in fast.history],
                               [r["val_loss"] for r in fit.history], rtol=1e-5)
    assert abs(fast.metrics["test_accuracy"] - fit.metrics["test_accuracy"]) <= 1 / 360


def test_tensorflow_stays_importable_after_training(digits_run):
    """Training on JAX blocks Keras' TensorFlow import only while it runs."""
    import importlib.util
    import sys

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")
    assert sys.modules.get("tensorflow", "absent") is not None


def test_the_manifest_records_when_training_began_and_how_long_finishing_took(digits_run):
    from mnistlab.training import process_age

    t = digits_run.manifest["timings"]
    assert set(t) == {"first_epoch_at_process_age_s", "first_epoch_after_train_call_s",
                      "finish_s"}
    # the first epoch began after train() was called, which was after the process started
    assert 0 < t["first_epoch_after_train_call_s"] <= t["first_epoch_at_process_age_s"]
    assert t["first_epoch_at_process_age_s"] < process_age()
    assert t["finish_s"] > 0


def test_a_rerun_of_a_run_from_another_compiled_loop_version_says_why_bits_may_differ():
    from mnistlab.engine.kernels import NUMERICS
    from mnistlab.training import _numerics_note

    now = {"path": "compiled", "numerics": NUMERICS}
    assert _numerics_note(dict(now), now) is None
    note = _numerics_note({"path": "compiled"}, now)  # recorded before the field existed
    assert f"numerics 1; this version has {NUMERICS}" in note and "Rerun the new run" in note
    assert _numerics_note({"path": "scan"}, {"path": "scan"}) is None
    assert _numerics_note(None, None) is None  # Keras fit both times: no engine record
    # a convnet trained with Keras fit before the conv engine took such models over
    note = _numerics_note(None, {"path": "conv", "threads": 2})
    assert "trained by Keras fit" in note and "with mnistlab's conv engine" in note


def test_a_rerun_of_a_run_whose_test_probabilities_came_from_keras_says_so(digits_run):
    from mnistlab.training import _probabilities_note

    assert digits_run.metrics["probabilities"] == "compiled loop"
    assert _probabilities_note(digits_run.metrics, digits_run.metrics) is None
    note = _probabilities_note({}, digits_run.metrics)  # recorded before the field existed
    assert "came from Keras' predict" in note and "with the compiled loop's forward" in note


def test_evaluate_gives_the_recorded_figures_and_falls_back_to_keras_without_numba(
        digits_run, monkeypatch):
    import mnistlab.engine.forward as forward
    from mnistlab.evaluation import evaluate

    metrics, _ = evaluate(digits_run)
    assert metrics["probabilities"] == "compiled loop"
    for key in ("test_loss", "test_accuracy", "confusion_matrix"):
        assert metrics[key] == digits_run.metrics[key], key

    def no_numba(*args, **kwargs):
        raise ImportError("numba is not installed")

    monkeypatch.setattr(forward, "loop_probabilities", no_numba)
    metrics, _ = evaluate(digits_run)
    assert metrics["probabilities"] == "keras"
    assert abs(metrics["test_loss"] - digits_run.metrics["test_loss"]) < 1e-5


def test_runs_record_the_compiled_loops_numerics(digits_run):
    from mnistlab.engine.kernels import NUMERICS

    engine = digits_run.manifest["engine"]
    assert engine["path"] == "compiled" and engine["numerics"] == NUMERICS
