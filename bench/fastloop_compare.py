"""Seconds per epoch of fit_fast's numpy SGD path: a baseline revision of fastloop vs this one.

Trains the tutorial recipe (full Fashion-MNIST, 42,000 train / 18,000 val, MLP 784-100-64-32-10,
SGD lr 0.01, batch 128) in ONE process with both versions of ``mnistlab/fastloop.py``: the
baseline is read from git (``--rev``, default ``main``), the new one is the installed package.
First it checks that both give bit-identical weights and history after ``--check-epochs`` epochs
from the same initial weights, then it alternates rounds of ``--epochs`` epochs per version and
prints the median epoch time (validation and the epoch-end write-back included, the first epoch
of each round left out). The machine may be shared: compare the ratio, measured side by side.

Run:  .venv/bin/python bench/fastloop_threads.py                 # 4 rounds of 5 epochs
      .venv/bin/python bench/fastloop_threads.py --rev HEAD~1 --rounds 6
"""

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def load_baseline(rev: str):
    """Import ``src/mnistlab/fastloop.py`` as it is at git revision ``rev``."""
    src = subprocess.run(
        ["git", "show", f"{rev}:src/mnistlab/fastloop.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "fastloop_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("fastloop_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_data():
    from mnistlab.data import load_dataset
    from mnistlab.data.split import split_train_val
    from mnistlab.model import to_input

    ds = load_dataset("fashion_mnist")
    tr, va = split_train_val(ds.y_train, 0.3, 111)
    x = to_input(ds.x_train)
    return x[tr], ds.y_train[tr], x[va], ds.y_train[va]


class EpochClock:
    """Plain fit_fast callback recording the time at each epoch end."""

    def __init__(self):
        self.times = [time.perf_counter()]

    def on_epoch_end(self, epoch, logs):
        self.times.append(time.perf_counter())


def run(module, data, weights, epochs, clock=None):
    """Train a fresh tutorial model from ``weights`` for ``epochs`` epochs; return it and history."""
    import keras

    from mnistlab.config import ModelConfig
    from mnistlab.model import build_model

    model = build_model(ModelConfig(), (28, 28), 10, seed=111)
    model.set_weights(weights)
    hist = module.fit_fast(
        model,
        *data,
        epochs=epochs,
        batch_size=128,
        optimizer=keras.optimizers.SGD(0.01),
        seed=111,
        callbacks=[clock] if clock else (),
    )
    return model, hist


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", default="main", help="git revision of the baseline fastloop.py")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5, help="epochs per round (first one dropped)")
    ap.add_argument("--check-epochs", type=int, default=2)
    ap.add_argument("--inexact", action="store_true", help="time even if the results differ")
    args = ap.parse_args()

    from mnistlab import fastloop
    from mnistlab.config import ModelConfig
    from mnistlab.model import build_model

    versions = {"old": load_baseline(args.rev), "new": fastloop}
    data = load_data()
    weights = build_model(ModelConfig(), (28, 28), 10, seed=111).get_weights()

    results = {name: run(mod, data, weights, args.check_epochs) for name, mod in versions.items()}
    (m_old, h_old), (m_new, h_new) = results["old"], results["new"]
    same = all(
        np.array_equal(a, b) for a, b in zip(m_old.get_weights(), m_new.get_weights(), strict=True)
    )
    print(
        f"bit-identical weights after {args.check_epochs} epochs: {same}; history equal: "
        f"{h_old == h_new}"
    )
    if (not same or h_old != h_new) and not args.inexact:
        sys.exit(1)

    times = {name: [] for name in versions}
    for r in range(args.rounds):
        for name, mod in versions.items():
            clock = EpochClock()
            run(mod, data, weights, args.epochs, clock)
            per = np.diff(clock.times)[1:]
            times[name] += per.tolist()
            print(f"round {r}: {name} " + " ".join(f"{t:.3f}" for t in per), flush=True)
    old, new = (statistics.median(times[n]) for n in ("old", "new"))
    print(
        f"median s/epoch (incl. validation): old {old:.3f}  new {new:.3f}  new/old {new / old:.2f}"
    )


if __name__ == "__main__":
    main()
