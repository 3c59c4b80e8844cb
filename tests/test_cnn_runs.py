"""A convnet run (model.kind = "cnn") through the commands, on digits (8x8, so padding "same")."""

import os
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from mnistlab.cli import cli
from mnistlab.config import load_config
from mnistlab.errors import TrainingInterrupted
from mnistlab.runs import load_run
from mnistlab.training import compare_weights, train

CNN = ["model.conv=[{filters=4, padding=\"same\"}, {filters=8, padding=\"same\"}]",
       "train.epochs=3"]


def _cfg():
    return load_config("cnn", overrides=CNN, data__dataset="digits")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    return train(_cfg(), out=tmp_path_factory.mktemp("cnn"), report=True)


def test_cnn_run_is_a_complete_run(cnn_run):
    assert cnn_run.is_complete and cnn_run.config.model.kind == "cnn"
    model = cnn_run.load_model()
    assert [type(x).__name__ for x in model.layers][:3] == ["Reshape", "Conv2D", "MaxPooling2D"]
    assert (cnn_run.path / "report.html").exists()
    # the conv engine's plan as arrays, checked against Keras on the test images at training
    assert cnn_run.manifest["predictor"]["file"] == "predictor.npz"
    assert cnn_run.manifest["predictor"]["checked_images"] > 0


def test_cnn_run_evaluates_predicts_and_reruns_through_the_cli(cnn_run):
    runner = CliRunner()
    res = runner.invoke(cli, ["evaluate", str(cnn_run.path), "--json"])
    assert res.exit_code == 0, res.output
    assert f"{cnn_run.metrics['test_accuracy']}" in res.output
    res = runner.invoke(cli, ["predict", str(cnn_run.path), "--index", "0"])
    assert res.exit_code == 0 and "test image 0: probabilities" in res.output, res.output
    res = runner.invoke(cli, ["rerun", str(cnn_run.path), "--out", str(cnn_run.path.parent / "re")])
    assert res.exit_code == 0 and "Weights bit-identical: yes" in res.output, res.output


def test_cnn_predictor_matches_keras_and_serves(cnn_run):
    from fastapi.testclient import TestClient

    from mnistlab.inference import Predictor
    from mnistlab.serving.app import create_app

    predictor = Predictor.from_run(cnn_run)
    x = np.load(cnn_run.path / "predictions.npz")["images"][:20]
    recorded = np.load(cnn_run.path / "predictions.npz")["probabilities"][:20]
    np.testing.assert_allclose(predictor.predict_proba(x), recorded, rtol=1e-5, atol=1e-6)
    with TestClient(create_app(cnn_run.path)) as client:
        res = client.post("/api/predict", json={"pixels": x[0].tolist()})
        assert res.status_code == 200, res.text
        assert res.json()["label"] == int(recorded[0].argmax())


def test_cnn_resume_equals_uninterrupted(tmp_path, cnn_run):
    def stop_after_first(epoch, epochs, logs):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(_cfg(), out=tmp_path, report=False, progress=stop_after_first)
    (run_dir,) = tmp_path.iterdir()
    done = train(resume=run_dir, report=False)
    assert compare_weights(done.load_model(), cnn_run.load_model())
    assert load_run(run_dir).metrics["test_loss"] == cnn_run.metrics["test_loss"]


def test_cnn_onnx_export_matches_keras(cnn_run):
    res = CliRunner().invoke(cli, ["export", str(cnn_run.path), "--format", "onnx",
                                   "--images", "100"])
    assert res.exit_code == 0, res.output
    assert "labels agree 100.00%" in res.output


@pytest.mark.slow  # about 30 s: bfloat16 convnet runs, whole, cut and resumed
def test_mixed_bfloat16_convnet_trains_and_resumes_bit_identically(tmp_path):
    cfg = load_config("cnn", data__dataset="digits", overrides=[
        *CNN, 'train.precision="mixed_bfloat16"', "train.learning_rate=0.01"])
    whole = train(cfg, out=tmp_path / "whole", report=False)
    model = whole.load_model()
    assert [layer.compute_dtype for layer in model.layers][-2:] == ["bfloat16", "float32"]
    assert all(w.dtype == "float32" for w in model.weights)  # weights stay float32
    assert whole.metrics["test_accuracy"] > 0.3  # it learns (10 classes: chance is 0.1)

    def stop_after_first(epoch, epochs, logs):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(cfg, out=tmp_path / "cut", report=False, progress=stop_after_first)
    (run_dir,) = (tmp_path / "cut").iterdir()
    assert compare_weights(train(resume=run_dir, report=False).load_model(), model)
