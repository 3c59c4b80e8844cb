"""Seconds per epoch of fit_fast, a git revision vs the working tree, side by side.

Trains the tutorial recipe (full Fashion-MNIST, 42,000 train / 18,000 val, MLP 784-100-64-32-10,
SGD lr 0.01, batch 128, seed 111) with ``mnistlab.engine.fit_fast`` of two versions of
``src/mnistlab``: the one at ``--rev`` (extracted with ``git archive``) and the working tree. Each
round runs one subprocess per version, alternating, and records every epoch's time as fit_fast's
callback sees it (validation and the epoch-end write-back included); the first epoch of each round
is left out. It also reports whether both versions end with bit-identical weights (they need not:
a change of summation order is allowed, a change of accuracy is not; both test accuracies are
printed). The machine may be shared: compare the ratio, measured side by side.

Run:  .venv/bin/python bench/fastloop_compare.py                   # --rev HEAD~1, 3 rounds of 6 epochs
      .venv/bin/python bench/fastloop_compare.py --rev 1aa5d4a --rounds 4
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys, time
import numpy as np
try:
    from mnistlab.backend import import_keras  # revisions from 2026-11-29 on
except ImportError:
    import keras
else:
    keras = import_keras()
from mnistlab.config import ModelConfig
from mnistlab.data import load_dataset
from mnistlab.data.split import split_train_val
try:
    from mnistlab.engine import fit_fast
except ImportError:  # revisions before the engine package (2026-11-30)
    from mnistlab.fastloop import fit_fast
from mnistlab.model import build_model, to_input

epochs, out = int(sys.argv[1]), sys.argv[2]
ds = load_dataset("fashion_mnist")
tr, va = split_train_val(ds.y_train, 0.3, 111)
x, xv = to_input(ds.x_train[tr]), to_input(ds.x_train[va])  # floats: every revision takes them
model = build_model(ModelConfig(), (28, 28), 10, seed=111)
model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy")
times = [time.perf_counter()]

class Clock:
    def on_epoch_end(self, epoch, logs):
        times.append(time.perf_counter())

fit_fast(model, x, ds.y_train[tr], xv, ds.y_train[va], epochs=epochs, batch_size=128,
         optimizer=model.optimizer, seed=111, callbacks=[Clock()])
acc = float((np.asarray(model.predict(to_input(ds.x_test), verbose=0)).argmax(1) == ds.y_test).mean())
np.savez(out, *model.get_weights())
print(json.dumps({"epochs": np.diff(times).tolist(), "test_accuracy": acc}))
"""


def extract(rev: str, into: Path) -> Path:
    """``src/`` of git revision ``rev`` under ``into``; returns the folder to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "src/mnistlab"], cwd=ROOT, check=True,
        capture_output=True,
    ).stdout
    tar = into / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into / "src"


def run(src: Path, epochs: int, weights: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "KERAS_BACKEND": "jax"}
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(epochs), str(weights)], env=env, check=True,
        capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", default="HEAD~1", help="git revision to compare the working tree with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6, help="epochs per round (first one dropped)")
    args = ap.parse_args()

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        versions = {args.rev: extract(args.rev, tmp), "working tree": ROOT / "src"}
        times = {name: [] for name in versions}
        accs = {name: [] for name in versions}
        for r in range(args.rounds):
            for i, (name, src) in enumerate(versions.items()):
                res = run(src, args.epochs, tmp / f"{r}-{i}.npz")
                times[name] += res["epochs"][1:]
                accs[name].append(res["test_accuracy"])
                shown = " ".join(f"{t:.3f}" for t in res["epochs"][1:])
                print(f"round {r}: {name:>12}: {shown}", flush=True)
        # the last round of each version trained the same epochs from the same weights
        last = sorted(tmp.glob(f"{args.rounds - 1}-*.npz"))
        a, b = (np.load(p) for p in last)
        same = all(np.array_equal(a[k], b[k]) for k in a.files)
    old, new = (statistics.median(times[n]) for n in versions)
    print(f"median s/epoch (incl. validation): {args.rev} {old:.3f}  working tree {new:.3f}  "
          f"ratio {new / old:.2f}")
    print(f"test accuracy after {args.epochs} epochs: {args.rev} {accs[args.rev][-1]:.4f}  "
          f"working tree {accs['working tree'][-1]:.4f}; bit-identical weights: {same}")


if __name__ == "__main__":
    main()
