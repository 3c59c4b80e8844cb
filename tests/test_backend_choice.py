"""Which Keras backend trains what: convnets on TensorFlow when it is installed (measured 3.6x
faster than JAX for the keras-io convnet), everything else on JAX, the user's KERAS_BACKEND
always, and a resumed or rerun run on the backend it started on (bit-identical)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mnistlab.errors import TrainingError
from mnistlab.runs import load_run
from mnistlab.training import compare_weights

ROOT = Path(__file__).resolve().parents[1]
HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="the [tensorflow] extra is not installed")


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("KERAS_BACKEND", "MNISTLAB_DEFAULT_BACKEND")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def _choose(call: str, **env) -> str:
    code = f"import mnistlab.backend as b, sys; print(b.{call}, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(**env), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[1] == "False"  # choosing imports nothing heavy
    return out[0]


@needs_tf
def test_convnets_get_tensorflow_and_the_rest_jax_unless_the_user_chose():
    assert _choose("choose('cnn')") == "tensorflow"
    assert _choose("choose('mlp')") == "jax"
    assert _choose("choose('cnn', needs_jax=True)") == "jax"  # several devices or processes
    assert _choose("choose('cnn')", KERAS_BACKEND="jax") == "jax"  # the user's choice stands
    assert _choose("choose('mlp')", KERAS_BACKEND="tensorflow") == "tensorflow"
    assert _choose("choose('mlp', recorded='tensorflow')", KERAS_BACKEND="jax") == "tensorflow"


def test_only_convnets_keras_fit_trains_ask_for_tensorflow():
    from mnistlab.config import load_config
    from mnistlab.epochs import keras_kind, trains_conv

    engine = load_config("cnn")
    assert trains_conv(engine) and keras_kind(engine) == "mlp"  # the conv engine: JAX
    for override in ('train.loop="fit"',
                     'train.optimizer="rmsprop"', 'train.precision="mixed_bfloat16"'):
        cfg = load_config("cnn", overrides=[override])
        assert not trains_conv(cfg) and keras_kind(cfg) == "cnn", override
    normed = load_config("cnn", overrides=["model.conv=[{filters=8, batch_norm=true}]"])
    assert not trains_conv(normed) and keras_kind(normed) == "cnn"  # batch normalisation
    best = load_config("best")
    assert trains_conv(best) and keras_kind(best) == "mlp"
    assert trains_conv(load_config("cnn", overrides=["augment.shift=0.1"]))
    assert trains_conv(load_config("cnn", overrides=['train.schedule="cosine"']))
    assert trains_conv(load_config("cnn", overrides=["train.label_smoothing=0.1"]))
    assert keras_kind(load_config("tutorial")) == "mlp"


def test_a_run_cannot_resume_on_another_loaded_backend():
    import keras

    from mnistlab.backend import choose

    other = "tensorflow" if keras.backend.backend() != "tensorflow" else "jax"
    with pytest.raises(TrainingError, match=f"KERAS_BACKEND={other}"):
        choose("cnn", recorded=other)
    assert choose("cnn") == keras.backend.backend()  # a new run uses what is loaded


# train.loop = "fit": Keras fit trains it (on TensorFlow), not mnistlab's conv engine (on JAX)
ARGS = ["train", "--preset", "cnn", "--dataset", "digits", "--epochs", "3", "--no-report",
        "--set", 'model.conv=[{filters=4, padding="same"}]', "--set", 'train.loop="fit"']


def _mnistlab(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mnistlab", *args], env=_env(),
                          capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.slow  # about 50 s: convnet runs on TensorFlow, whole, cut and resumed
@needs_tf
def test_a_convnet_trains_resumes_and_reruns_bit_identically_on_tensorflow(tmp_path):
    whole = _mnistlab(*ARGS, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    assert "oneDNN" not in whole.stderr and "absl" not in whole.stderr  # TF's start-up notes
    (run_dir,) = (tmp_path / "whole").iterdir()
    assert json.loads((run_dir / "manifest.json").read_text())["backend"] == "tensorflow"

    # Interrupted after the first epoch, then resumed: the same bits.
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", *ARGS, "--out", str(tmp_path / "cut")],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("Epoch 1/3"):
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "--resume" in err, err
    (cut,) = (tmp_path / "cut").iterdir()
    resumed = _mnistlab("train", "--resume", str(cut), "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert compare_weights(load_run(cut).load_model(), load_run(run_dir).load_model())

    again = _mnistlab("rerun", str(run_dir), "--no-report", "--out", str(tmp_path / "again"))
    assert again.returncode == 0 and "Weights bit-identical: yes" in again.stdout, again.stdout
