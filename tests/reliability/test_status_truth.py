"""What mnistlab says about a run is the truth: failed runs say failed, useless runs say so, a run
moved to another folder still evaluates, and messages name files without leaking their content."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mnistlab.cli import cli
from mnistlab.config import load_config
from mnistlab.errors import ImageError, RunError
from mnistlab.health import check_learning
from mnistlab.runlock import LOCK_FILE, is_held
from mnistlab.runs import load_run
from mnistlab.training import train


def test_a_run_stopped_by_a_handled_error_is_recorded_failed_and_not_live(tmp_path):
    """Any error that ends training (here a RunError raised after epoch 1) is recorded, and the
    run's lock is released: `mnistlab runs` must not show it as running forever."""
    def fail(epoch, epochs, logs):
        raise RunError("simulated: the results folder went away")

    cfg = load_config(overrides=["train.epochs=3"], data__dataset="digits")
    with pytest.raises(RunError, match="simulated"):
        train(cfg, out=tmp_path, command=["test"], report=False, progress=fail)
    (run_dir,) = tmp_path.iterdir()
    run = load_run(run_dir, require_complete=False)
    assert run.manifest["status"] == "failed" and run.status == "failed"
    assert run.manifest["error"] == "RunError: simulated: the results folder went away"
    assert is_held(run_dir) is False and (run_dir / LOCK_FILE).exists()
    res = CliRunner().invoke(cli, ["runs", str(tmp_path)])
    assert res.exit_code == 0 and " failed " in res.output
    # A failed run resumes from its checkpoint like an interrupted one.
    assert train(resume=run_dir, report=False).is_complete


def test_a_run_that_did_not_learn_is_flagged_in_cli_manifest_metrics_and_report(tmp_path):
    """learning_rate=10: the loss stays flat, accuracy at chance; the run completes but says so."""
    res = CliRunner().invoke(cli, ["train", "--dataset", "digits", "--epochs", "3", "--set",
                                   "train.learning_rate=10", "--quiet", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "Warning: the model did not learn: after 3 epochs its best validation accuracy" in res.output
    (run_dir,) = tmp_path.iterdir()
    run = load_run(run_dir)
    assert run.is_complete  # kept
    learning = run.manifest["learning"]
    assert learning["learned"] is False and learning["epochs"] == 3
    assert learning["best_val_accuracy"] <= learning["majority_share"] + 0.01
    assert run.metrics["learning"] == learning
    html = (run_dir / "report.html").read_text()
    assert "<strong>Warning:</strong> the model did not learn" in html


def test_learning_check_separates_learning_from_chance():
    labels = np.repeat(np.arange(10), 10)
    labels[10:15] = 0  # class 0 is the most common: 15 %
    flat = [{"val_accuracy": 0.15}] * 5
    learned = [{"val_accuracy": a} for a in (0.2, 0.5, 0.8)]
    assert check_learning(flat, labels, 10, 10.0)["learned"] is False
    assert "0.1500" in check_learning(flat, labels, 10, 10.0)["message"]
    assert check_learning(learned, labels, 10, 0.01) == {
        "learned": True, "best_val_accuracy": 0.8, "majority_share": 0.15, "epochs": 3,
        "message": None}
    assert check_learning(flat[:2], labels, 10, 0.01)["learned"] is None  # too early to say


def test_relative_data_path_is_recorded_resolved_and_evaluates_from_elsewhere(tmp_path, monkeypatch):
    from mnistlab.data import load_dataset

    ds = load_dataset("digits")
    here, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (here / "data").mkdir(parents=True)
    elsewhere.mkdir()
    np.savez(here / "data" / "mine.npz", x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
             y_test=ds.y_test)
    monkeypatch.chdir(here)
    res = CliRunner().invoke(cli, ["train", "--data", "data/mine.npz", "--epochs", "1", "--quiet",
                                   "--no-report", "--out", "runs"])
    assert res.exit_code == 0, res.output
    (run_dir,) = (here / "runs").iterdir()
    run = load_run(run_dir)
    assert run.config.data.path == str(here / "data" / "mine.npz")
    assert run.manifest["dataset"]["path_given"] == "data/mine.npz"
    monkeypatch.chdir(elsewhere)
    res = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["test_accuracy"] == run.metrics["test_accuracy"]


def test_not_an_image_error_does_not_echo_the_file_content(tmp_path):
    from mnistlab.images import load_image

    secret = tmp_path / "notes.png"
    secret.write_bytes(b"password=hunter2\n" * 3)
    binary = tmp_path / "blob.png"
    binary.write_bytes(b"\x01\x02SECRETKEY" + bytes(range(200)))
    for path, kind in ((secret, "a text file of 51 bytes"), (binary, "211 bytes of an unknown format")):
        with pytest.raises(ImageError) as e:
            load_image(path)
        assert str(path) in str(e.value) and kind in str(e.value)
        assert "hunter2" not in str(e.value) and "SECRET" not in str(e.value)


def test_predict_on_a_folder_without_images_says_so(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no pictures here")
    model = tmp_path / "m.keras"
    import keras

    inp = keras.Input(shape=(28, 28))
    keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp))
                ).save(model)
    res = CliRunner().invoke(cli, ["predict", "--model", str(model), str(empty)])
    assert res.exit_code == 1, res.output
    assert f"Error: folder {empty} holds no image files" in res.output
