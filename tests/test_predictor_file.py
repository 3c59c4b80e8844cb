"""predictor.npz: the numpy predictor saved with a run, checked at training, used without Keras."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from mnistlab.errors import ImageError, ModelError, RunError
from mnistlab.files import load_npz, sha256_file
from mnistlab.inference import VERIFY_IMAGES, Predictor, save_checked
from mnistlab.photos import plan_prediction
from mnistlab.runs import PREDICTOR_FILE, load_run

# Runs the CLI in a fresh interpreter and reports at exit which heavy modules it imported.
_WRAPPER = """
import atexit, os, sys
def _report():
    heavy = [m for m in ("keras", "jax", "tensorflow", "numba") if m in sys.modules]
    os.write(2, ("IMPORTED=" + ",".join(heavy) + "\\n").encode())
atexit.register(_report)
from mnistlab.cli import main
sys.argv[0] = "mnistlab"
main()
"""


def _cli(*args) -> tuple[subprocess.CompletedProcess, list[str]]:
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *map(str, args)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "KERAS_BACKEND": "jax"})
    line = [x for x in out.stderr.splitlines() if x.startswith("IMPORTED=")]
    assert line, out.stderr  # the hook ran: the process ended through atexit
    return out, [m for m in line[-1].removeprefix("IMPORTED=").split(",") if m]


@pytest.fixture()
def one_png(tmp_path) -> Path:
    img = np.full((120, 90), 235, np.uint8)
    img[20:100, 40:52] = 20  # a thick vertical stroke
    Image.fromarray(img).save(tmp_path / "one.png")
    return tmp_path / "one.png"


@pytest.fixture()
def run_copy(digits_run, tmp_path) -> Path:
    """A copy of the session's run that a test may damage."""
    return Path(shutil.copytree(digits_run.path, tmp_path / "run"))


def _edit_manifest(run_dir: Path, edit) -> None:
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


# Written and checked at training --------------------------------------------------------------


def test_training_writes_a_checked_predictor(digits_run):
    manifest = load_run(digits_run.path).manifest
    record = manifest["predictor"]
    n_test = len(load_npz(digits_run.path / "predictions.npz", keys=("labels",))["labels"])
    assert record["file"] == PREDICTOR_FILE
    assert record["checked_images"] == min(n_test, VERIFY_IMAGES)
    assert record["max_abs_diff"] <= record["atol"]
    assert manifest["files"][PREDICTOR_FILE] == sha256_file(digits_run.path / PREDICTOR_FILE)


def test_the_file_gives_the_same_bits_as_the_keras_model_read_now(digits_run):
    """Bit for bit: the file holds the very float32 arrays ``from_model`` reads from Keras."""
    from_file = Predictor.from_run(digits_run.path)
    from_keras = Predictor.from_run(digits_run.path, model=digits_run.load_model())
    for name, a in from_keras.network.to_arrays().items():
        np.testing.assert_array_equal(from_file.network.to_arrays()[name], a, err_msg=name)
    x = np.random.default_rng(3).integers(0, 256, (2000, 8, 8), dtype=np.uint8)
    for batch in (x[:7], x):  # numpy path, and the compiled path from 1,024 rows
        np.testing.assert_array_equal(from_file.predict_proba(batch), from_keras.predict_proba(batch))
    assert from_file.class_names == from_keras.class_names
    assert from_file.preprocess_params == from_keras.preprocess_params


def test_batchnorm_activation_and_biasless_layers_survive_the_file(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28)), keras.layers.Flatten(),
        keras.layers.Dense(32, use_bias=False), keras.layers.BatchNormalization(),
        keras.layers.Activation("gelu"), keras.layers.Dropout(0.3), keras.layers.Dense(16),
        keras.layers.ReLU(), keras.layers.Dense(10), keras.layers.Softmax(),
    ])
    x = np.random.default_rng(1).integers(0, 256, (300, 28, 28), dtype=np.uint8)
    model(x[:64] / 255.0, training=True)  # moves the BatchNormalization statistics off 0/1
    record = save_checked(model, tmp_path / "p.npz", x, model.predict(x / 255.0, verbose=0))
    assert record["file"] == "p.npz" and record["checked_images"] == 300
    again = Predictor.from_file(tmp_path / "p.npz")
    np.testing.assert_array_equal(again.predict_proba(x), Predictor.from_model(model).predict_proba(x))


def test_models_the_predictor_cannot_run_get_no_file(tmp_path):
    keras.utils.set_random_seed(0)
    cnn = keras.Sequential([  # tanh: the conv engine does not read it, Keras runs it
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="tanh"),
        keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax"),
    ])
    x = np.random.default_rng(1).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    record = save_checked(cnn, tmp_path / "p.npz", x, np.zeros((20, 10), np.float32))
    assert record["file"] is None and "convnet" in record["reason"]
    assert not (tmp_path / "p.npz").exists()


def test_a_convnet_the_conv_engine_reads_gets_a_checked_file(tmp_path):
    from mnistlab.engine import conv_kernels

    if not conv_kernels.compiled_before():
        pytest.skip("the conv kernels are not compiled here (make test compiles them first)")
    keras.utils.set_random_seed(0)
    cnn = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax"),
    ])
    x = np.random.default_rng(1).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    want = np.asarray(cnn.predict(x[..., None] / np.float32(255), verbose=0), np.float32)
    record = save_checked(cnn, tmp_path / "p.npz", x, want)
    assert record["file"] == "p.npz" and record["checked_images"] == 20
    assert type(Predictor.from_file(tmp_path / "p.npz").network).__name__ == "EngineNetwork"
    record = save_checked(cnn, tmp_path / "q.npz", x, want + np.float32(1e-3))  # disagrees
    assert record["file"] is None and not (tmp_path / "q.npz").exists()


def test_a_predictor_that_disagrees_with_keras_is_not_kept(tmp_path):
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(),
                            keras.layers.Dense(10, activation="softmax")])
    x = np.random.default_rng(1).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    wrong = mlp.predict(x / 255.0, verbose=0) + np.float32(1e-3)
    record = save_checked(mlp, tmp_path / "p.npz", x, wrong)
    assert record["file"] is None and "differs from the model on 20 test images" in record["reason"]
    assert not (tmp_path / "p.npz").exists()


def test_saving_checks_on_the_given_images_only(tmp_path, monkeypatch):
    # The check against ``expected`` on real images is the one check: no second, random batch
    # run through Keras (an eager call that cost ~0.17 s of every run's finish).
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(),
                            keras.layers.Dense(10, activation="softmax")])
    x = np.random.default_rng(1).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    want = mlp.predict(x / 255.0, verbose=0)
    monkeypatch.setattr(Predictor, "_verify", lambda *a: pytest.fail("ran the model again"))
    record = save_checked(mlp, tmp_path / "p.npz", x, want)
    assert record["file"] == "p.npz" and record["checked_images"] == 20


def test_a_file_that_is_not_a_saved_predictor_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ModelError, match="no input_dim"):
        Predictor.from_file(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot read the saved predictor"):
        Predictor.from_file(tmp_path / "junk.npz")


# Damaged and older runs -----------------------------------------------------------------------


def test_a_modified_predictor_file_is_refused(run_copy):
    """Refused, not skipped for model.keras: the run was changed after training, and the error
    says how to predict through the Keras model instead."""
    path = run_copy / PREDICTOR_FILE
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the sha256.*--model .*model.keras"):
        Predictor.from_run(run_copy)


def test_a_missing_predictor_file_is_a_clear_error(run_copy):
    (run_copy / PREDICTOR_FILE).unlink()
    with pytest.raises(RunError, match=f"lacks {PREDICTOR_FILE}"):
        plan_prediction([run_copy], indices=[0])
    with pytest.raises(ModelError, match="cannot read .*which the run's manifest lists"):
        Predictor.from_run(run_copy)


def test_an_older_run_without_the_file_predicts_through_keras(run_copy, digits_run):
    (run_copy / PREDICTOR_FILE).unlink()

    def forget(manifest):
        del manifest["files"][PREDICTOR_FILE]
        del manifest["predictor"]

    _edit_manifest(run_copy, forget)
    old = Predictor.from_run(run_copy)
    x = load_npz(run_copy / "predictions.npz", keys=("images",))["images"]
    np.testing.assert_array_equal(old.predict_proba(x), Predictor.from_run(digits_run.path).predict_proba(x))


# Arguments first ------------------------------------------------------------------------------


def test_missing_files_are_refused_before_anything_is_loaded(digits_run, tmp_path):
    with pytest.raises(ImageError, match=r"no such file or folder: .*a\.png, .*b\.png"):
        plan_prediction([digits_run.path, tmp_path / "a.png", tmp_path / "b.png"])
    with pytest.raises(ImageError, match="no such file or folder"):
        plan_prediction([tmp_path / "a.png"], model_path=digits_run.path / "model.keras")


# Whole processes: what gets imported ------------------------------------------------------------


def test_predict_on_a_run_never_imports_keras(digits_run, one_png):
    out, imported = _cli("predict", digits_run.path, one_png, "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["status"] == "ok" and row["file"] == str(one_png)
    assert imported == []


def test_evaluate_on_a_run_never_imports_keras_and_gives_the_recorded_figures(digits_run):
    out, imported = _cli("evaluate", digits_run.path, "--json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    for key in ("test_loss", "test_accuracy", "confusion_matrix", "probabilities"):
        assert metrics[key] == digits_run.metrics[key], key
    assert imported == ["numba"]  # the compiled loop's forward pass; neither Keras nor JAX


def test_bad_arguments_fail_before_keras(digits_run, tmp_path):
    out, imported = _cli("predict", digits_run.path, tmp_path / "missing.png")
    assert out.returncode == 1 and "Error: no such file or folder" in out.stderr
    assert "missing.png" in out.stderr and imported == []
    out, imported = _cli("evaluate", tmp_path / "no-run")
    assert out.returncode == 1 and "Error: run directory not found" in out.stderr
    assert imported == []


def test_evaluate_refuses_an_incomplete_run_before_keras(run_copy):
    (run_copy / "model.keras").unlink()
    out, imported = _cli("evaluate", run_copy)
    assert out.returncode == 1 and "lacks model.keras" in out.stderr
    assert imported == []


def test_exit_code_of_a_bad_file_without_jax(digits_run, tmp_path):
    """The CLI's exit path when JAX was never loaded: Python exits the ordinary way, code kept."""
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out, imported = _cli("predict", digits_run.path, tmp_path / "broken.png")
    assert out.returncode == 1 and "broken.png" in out.stdout and "ERROR: " in out.stdout
    assert imported == []


def test_importing_the_cli_loads_nothing_heavy():
    code = ("import sys, mnistlab.cli; "
            "print(','.join(m for m in ('keras', 'jax', 'tensorflow', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr
