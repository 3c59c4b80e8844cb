"""Epoch times when another process keeps one of the two cores busy (issue 18).

Four whole ``mnistlab train --dataset fashion_mnist --no-report`` runs (50 epochs, the tutorial),
side by side in one sitting: one BLAS/compiled thread (``OPENBLAS_NUM_THREADS=1``) and the default
(two threads, chosen per epoch), each on an idle machine and beside a busy-looping process. The
target: beside the busy process, no epoch of the default run slower than 2x the one-thread median.

Run:  .venv/bin/python bench/busy_core.py
"""

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def train(env_extra: dict, busy: bool) -> list[float]:
    spinner = None
    if busy:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [str(BIN / "mnistlab"), "train", "--dataset", "fashion_mnist", "--no-report",
                 "--quiet", "--out", tmp], check=True, env={**os.environ, **env_extra},
            )
            (run,) = Path(tmp).iterdir()
            with open(run / "history.csv") as f:
                rows = list(csv.DictReader(f))
            return [float(r["seconds"]) for r in rows]
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()


def main():
    one_thread = {"OPENBLAS_NUM_THREADS": "1"}
    runs = {}
    for busy in (False, True):
        for name, env in (("one thread", one_thread), ("default", {})):
            label = f"{name}, {'other core busy' if busy else 'idle'}"
            first, *runs[label] = train(env, busy)  # epoch 1 also loads the code
            print(f"{label:32s} median {statistics.median(runs[label]):.3f} s  "
                  f"max {max(runs[label]):.3f} s  (epoch 1: {first:.3f} s)", flush=True)
    ref = statistics.median(runs["one thread, other core busy"])
    slow = {i: t for i, t in enumerate(runs["default, other core busy"], 2) if t > 2 * ref}
    print(f"\nbusy: default epochs slower than 2x the one-thread median ({2 * ref:.3f} s): "
          f"{len(slow)} of {len(runs['default, other core busy'])}"
          + (f" (worst {max(slow.values()):.3f} s; epochs "
             + ", ".join(f"{i}: {t:.3f}" for i, t in slow.items()) + ")" if slow else ""))


if __name__ == "__main__":
    main()
