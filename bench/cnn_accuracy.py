"""The ``cnn`` preset against the keras-io ``mnist_convnet`` script on Fashion-MNIST (issue 19).

For each seed, alternating, as whole processes on the full data (15 epochs, batch 128, Adam 1e-3,
10 % validation): the keras-io script as written (``validation_split=0.1``, seeded with
``keras.utils.set_random_seed``), on Keras/TensorFlow, and ``mnistlab train --preset cnn`` (which
trains on mnistlab's conv engine, ``engine/conv_*``). Prints each run's test accuracy, median
epoch seconds (the first epoch left out), wall time and peak RSS, then the means and the speed
ratio of the sitting (script s/epoch over mnistlab's).

Run:  .venv/bin/python bench/cnn_accuracy.py [--seeds 3]
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

SCRIPT = r"""
import json, sys, time
import keras, numpy as np
from mnistlab.data import load_dataset
seed = int(sys.argv[1])
keras.utils.set_random_seed(seed)
ds = load_dataset("fashion_mnist")
x_train = np.expand_dims(ds.x_train.astype("float32") / 255, -1)
x_test = np.expand_dims(ds.x_test.astype("float32") / 255, -1)
y_train = keras.utils.to_categorical(ds.y_train, 10)
y_test = keras.utils.to_categorical(ds.y_test, 10)
model = keras.Sequential([
    keras.Input(shape=(28, 28, 1)),
    keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
    keras.layers.MaxPooling2D(pool_size=(2, 2)),
    keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
    keras.layers.MaxPooling2D(pool_size=(2, 2)),
    keras.layers.Flatten(),
    keras.layers.Dropout(0.5),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
times = []
class T(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, e, logs=None): times.append(time.perf_counter() - self.t)
model.fit(x_train, y_train, batch_size=128, epochs=15, validation_split=0.1, verbose=0,
          callbacks=[T()])
loss, acc = model.evaluate(x_test, y_test, verbose=0)
print(json.dumps({"test_accuracy": acc, "epoch_seconds": times}))
"""


def _run(cmd: list[str], env: dict) -> tuple[str, float]:
    """Run a whole process; return its stdout and peak RSS in MB (from ``wait4``)."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{cmd[:3]} failed with exit code {proc.returncode}")
        out.seek(0)
        return out.read(), usage.ru_maxrss / 1024


def keras_io(seed: int) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    out, rss = _run([sys.executable, "-c", SCRIPT, str(seed)], env)
    r = json.loads(out.strip().splitlines()[-1])
    return {"test_accuracy": r["test_accuracy"], "wall": time.perf_counter() - t0,
            "s_per_epoch": statistics.median(r["epoch_seconds"][1:]), "rss_mb": rss}


def mnistlab(seed: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        _, rss = _run([str(BIN / "mnistlab"), "train", "--preset", "cnn", "--dataset",
                       "fashion_mnist", "--seed", str(seed), "--no-report", "--quiet", "--out",
                       tmp], env)
        wall = time.perf_counter() - t0
        (run,) = Path(tmp).iterdir()
        with open(run / "history.csv") as f:
            seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
        manifest = json.loads((run / "manifest.json").read_text())
    return {"test_accuracy": manifest["test_accuracy"], "wall": wall,
            "s_per_epoch": statistics.median(seconds[1:]), "rss_mb": rss,
            "engine": (manifest.get("engine") or {}).get("path", "keras fit")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    rows = {"keras-io script (Keras/TF)": [], "mnistlab --preset cnn": []}
    for seed in range(1, args.seeds + 1):
        for name, fn in zip(rows, (keras_io, mnistlab), strict=True):
            rows[name].append(fn(seed))
            r = rows[name][-1]
            print(f"seed {seed} {name:28s} test {r['test_accuracy']:.4f}  "
                  f"{r['s_per_epoch']:.2f} s/epoch  wall {r['wall']:.0f} s  "
                  f"peak RSS {r['rss_mb']:.0f} MB {r.get('engine', '')}", flush=True)
    print()
    for name, rs in rows.items():
        accs = [r["test_accuracy"] for r in rs]
        print(f"{name:28s} test {statistics.mean(accs):.4f} ± "
              f"{statistics.stdev(accs) if len(accs) > 1 else 0:.4f}  "
              f"{statistics.median(r['s_per_epoch'] for r in rs):.2f} s/epoch  "
              f"wall {statistics.median(r['wall'] for r in rs):.0f} s  "
              f"peak RSS {max(r['rss_mb'] for r in rs):.0f} MB")
    script, ours = rows.values()
    ratios = [a["s_per_epoch"] / b["s_per_epoch"] for a, b in zip(script, ours, strict=True)]
    print(f"speed-up per epoch, script / mnistlab, seed by seed: "
          f"{', '.join(f'{r:.2f}x' for r in ratios)} (median {statistics.median(ratios):.2f}x)")


if __name__ == "__main__":
    main()
