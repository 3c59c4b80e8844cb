"""The first run on a new machine vs the runs after it, through `make run`'s own set-up.

A fresh clone of this repository (the committed HEAD) gets a fresh `.venv` from the same make
targets `make run` builds before training (`warm-background warm-keras-background
.venv/.installed-run`), with every cache empty (`XDG_CACHE_HOME` points into a temporary folder:
numba's compiled kernels, JAX's compilation cache, the unpacked datasets). Then, at once, the first
`mnistlab train --dataset fashion_mnist --no-report --quiet` (the background compilation of the
convnet kernels may still be running, as it would be for a user); then, once every background
compilation is done, `--warm-runs` more. Prints each run's wall time and its manifest's start-up and
finish timings, and whether the first one trained on the numpy replica (`replica_epochs`).

Run:  .venv/bin/python bench/first_run.py                  # ~3 min; pip needs its index
      .venv/bin/python bench/first_run.py --warm-runs 3
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_run(clone: Path, env: dict, runs: Path) -> dict:
    cmd = [str(clone / ".venv/bin/mnistlab"), "train", "--dataset", "fashion_mnist", "--no-report",
           "--quiet", "--out", str(runs)]
    before = set(runs.glob("*")) if runs.exists() else set()
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    (run,) = set(runs.glob("*")) - before
    manifest = json.loads((run / "manifest.json").read_text())
    return {"wall_s": round(wall, 2), **manifest.get("timings", {}),
            "replica_epochs": manifest.get("engine", {}).get("replica_epochs", 0)}


def background_done(cache: Path) -> None:
    """Wait for the background compilations writing into ``cache`` (they outlive make and the
    runs; make starts them as ``.venv/bin/python``, so they are told apart by their
    ``XDG_CACHE_HOME``)."""
    mark = f"XDG_CACHE_HOME={cache}".encode()
    while True:
        pids = subprocess.run(["pgrep", "-f", "mnistlab.engine.warm"], capture_output=True,
                              text=True).stdout.split()
        mine = []
        for pid in pids:
            try:
                if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    mine.append(pid)
            except OSError:  # gone meanwhile
                pass
        if not mine:
            return
        time.sleep(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warm-runs", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mnistlab-first-run-") as tmp:
        tmp = Path(tmp)
        clone = tmp / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "MNISTLAB_"))}
        env.pop("VIRTUAL_ENV", None)
        env["XDG_CACHE_HOME"] = str(tmp / "cache")
        t0 = time.perf_counter()
        subprocess.run(["make", "-s", "warm-background", "warm-keras-background",
                        ".venv/.installed-run"], cwd=clone, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        print(f"set-up (venv, pip, background compilations started): "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        runs = tmp / "runs"
        rows = [("first", timed_run(clone, env, runs))]
        print(f"first run: {rows[0][1]}", flush=True)
        t0 = time.perf_counter()
        background_done(tmp / "cache")
        print(f"background compilation ended {time.perf_counter() - t0:.0f} s after the first "
              "run", flush=True)
        for i in range(args.warm_runs):
            rows.append((f"warm {i + 1}", timed_run(clone, env, runs)))
            print(f"{rows[-1][0]}: {rows[-1][1]}", flush=True)
        background_done(tmp / "cache")  # the runs' own, if any, before the folder goes
    warm = sorted(r["wall_s"] for name, r in rows[1:])
    if warm:
        first = rows[0][1]["wall_s"]
        print(f"first run {first:.2f} s vs later runs {warm[0]:.2f}-{warm[-1]:.2f} s: "
              f"{first - warm[len(warm) // 2]:+.2f} s against their median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
