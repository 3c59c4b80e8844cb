"""Where the tutorial run's start-up goes (issue 18: from the command to the first epoch).

Each round starts two fresh processes, alternating, of
``mnistlab train --dataset fashion_mnist --no-report --quiet --epochs 1`` (warm numba cache):

* ``phases``: the command as it is, with a clock (seconds since the process started) on the
  steps before the first epoch: mnistlab's imports, the train call, the data opened, the compiled
  engine loaded (numba's import, the cached kernels, the two-thread probe) and the first epoch.
* ``preloaded``: the same, but a thread loads the compiled engine from the process' first line,
  beside the imports and the data, instead of after them. This is the obvious way to take the
  engine's load off the critical path; it prints whether it does.
* ``scipy_first``: the command with ``scipy.linalg`` imported first, as numba's first kernel call
  imported it before ``engine.numba_import``: what that module saves, side by side.

Run:  .venv/bin/python bench/startup.py [--rounds 5]
Prints the median of every step and the first epoch's start in both kinds of process.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ENV = {**os.environ, "KERAS_BACKEND": "jax"}

# Runs in the child: times named functions by the process' age, then runs the CLI.
CHILD = r"""
import os, sys, threading


def process_age():  # as mnistlab.training.process_age, before anything is imported
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    uptime = float(open("/proc/uptime").read().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


marks = {"python_started": process_age()}
if sys.argv[1] == "preloaded":
    def _load():
        from mnistlab.engine import kernels
        kernels.load()
        kernels.parallel_threads()
    threading.Thread(target=_load, daemon=True).start()
elif sys.argv[1] == "scipy_first":
    import scipy.linalg  # noqa: F401
import functools, importlib, json


def clock(module, name, label):
    owner = importlib.import_module(module)
    *path, attr = name.split(".")
    for part in path:
        owner = getattr(owner, part)
    inner = getattr(owner, attr)

    @functools.wraps(inner)
    def timed(*a, **k):
        start = process_age()
        try:
            return inner(*a, **k)
        finally:
            marks.setdefault(label + "_from", round(start, 3))
            marks.setdefault(label + "_to", round(process_age(), 3))

    setattr(owner, attr, timed)


from mnistlab.cli import main
marks["cli_imported"] = process_age()
clock("mnistlab.training", "_open", "data_opened")
clock("mnistlab.engine.fit", "_jit_available", "engine_loaded")
clock("mnistlab.training", "_EpochEnd.on_epoch_begin", "first_epoch")
sys.argv = ["mnistlab", *sys.argv[2:]]
try:
    main()
finally:
    print("MARKS " + json.dumps(marks), file=sys.stderr)
"""

STEPS = [("python_started", "python running"), ("cli_imported", "mnistlab.cli imported"),
         ("data_opened_from", "data: open begins"), ("data_opened_to", "data: opened"),
         ("engine_loaded_from", "engine: load begins"), ("engine_loaded_to", "engine: loaded"),
         ("first_epoch_from", "first epoch begins")]


def one(kind: str) -> dict:
    """One process of ``kind``; its marks (process age in seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", CHILD, kind, "train", "--dataset", "fashion_mnist",
               "--no-report", "--quiet", "--epochs", "1", "--out", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    lines = [x for x in done.stderr.splitlines() if x.startswith("MARKS ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("MARKS "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = {"phases": [], "preloaded": [], "scipy_first": []}
    one("phases")  # the page cache and the JAX/numba caches, once
    for _ in range(args.rounds):
        for kind in rows:
            rows[kind].append(one(kind))
    print(f"median of {args.rounds} rounds, seconds since the process started")
    print(f"{'step':28s} {'as is':>8s} {'preloaded':>10s} {'scipy first':>12s}")
    for key, label in STEPS:
        med = [statistics.median(r.get(key, float("nan")) for r in rows[k]) for k in rows]
        print(f"{label:28s} {med[0]:8.3f} {med[1]:10.3f} {med[2]:12.3f}")
    for kind, name in (("phases", "as is"), ("scipy_first", "scipy first")):
        load = statistics.median(r["engine_loaded_to"] - r["engine_loaded_from"]
                                 for r in rows[kind])
        print(f"engine load on the critical path ({name}): {load:.3f} s")
    gain = statistics.median(b["first_epoch_from"] - a["first_epoch_from"]
                             for a, b in zip(rows["phases"], rows["scipy_first"], strict=True))
    print(f"first epoch, scipy first minus as is (median of the rounds' pairs): {gain:+.3f} s")


if __name__ == "__main__":
    main()
