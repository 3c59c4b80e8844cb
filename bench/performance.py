"""The issue-8 table: the tutorial's code vs ``mnistlab train``, side by side in one sitting.

For each repeat (seed 1..N) it runs, alternating, as subprocesses on full-size Fashion-MNIST:

* the tutorial's code as written (``bench/tutorial_baseline.py``: Keras 3 on TensorFlow, float64
  input, ``fit``), and
* ``mnistlab train --preset tutorial --dataset fashion_mnist --no-report --seed S``
  (start-up, load, 50 epochs, evaluation, saving: the wall time a user waits),

and reports s/epoch (median over epochs 2..50, validation included), wall, test accuracy
(mean ± sd over seeds) and peak RSS. Then: Predictor batch throughput and single-image latency
(``bench/predictor_speed.py``), ``mnistlab --help`` start-up, per-epoch time at 1×, 2×, 4× the
training data, peak RSS for 5 vs 50 epochs (memory must not grow with epochs), the time from the
process' start to the first epoch and the finishing time (the run's manifest, ``timings``), and a
run with an empty numba cache against one with the cache it left (the first run on a machine).
Each seed's timed run comes after an untimed one-epoch run of the same model, which keeps the
template of its Keras files (``mnistlab.keras_files``): the timed run finishes without Keras, as
every run of a model after its first does. A run with the templates off
(``mnistlab_keras_imported``: Keras imported beside the first epochs, as a model's first run
does) alternates with it.

Run:  .venv/bin/python bench/performance.py [--repeats 3] [--skip-tutorial]
Writes bench/results/performance-<time>.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
# Templates of Keras' model files (``mnistlab.keras_files``) in a folder of this sitting's own: a
# seed's first (untimed) run keeps one, its timed runs finish without Keras.
ENV = {**os.environ, "KERAS_BACKEND": "jax",
       "MNISTLAB_KERAS_FILES": tempfile.mkdtemp(prefix="mnistlab-bench-keras-files-")}
KERAS_LOADED = {**ENV, "MNISTLAB_KERAS_FILES": "off"}  # the first run of a model: Keras imported


def run_rss(cmd: list[str], env=None) -> tuple[str, float, float]:
    """Run a command; return (stdout, wall seconds, the child's peak RSS in MB from wait4)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env or ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise RuntimeError(f"{cmd} failed:\n{err.read()[-2000:]}")
        return out.read(), wall, usage.ru_maxrss / 1024


def mnistlab_train(seed: int, extra=(), epochs: int = 50, env=None, skip: int = 1) -> dict:
    """One whole run; ``s_per_epoch`` is the median of the epochs after the first ``skip``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(BIN / "mnistlab"), "train", "--preset", "tutorial", "--no-report", "--quiet",
               "--seed", str(seed), "--epochs", str(epochs), "--out", tmp, *extra]
        if "--data" not in extra:
            cmd += ["--dataset", "fashion_mnist"]
        _, wall, rss = run_rss(cmd, env)
        (run_dir,) = Path(tmp).iterdir()
        from mnistlab.runs import read_history

        epochs_s = [r["seconds"] for r in read_history(run_dir / "history.csv")]
        acc = json.loads((run_dir / "metrics.json").read_text())["test_accuracy"]
        manifest = json.loads((run_dir / "manifest.json").read_text())
    timings = manifest.get("timings", {})
    return {"s_per_epoch": statistics.median(epochs_s[skip:] or epochs_s), "wall": wall,
            "rss_mb": rss, "test_accuracy": acc,
            "to_first_epoch_s": timings.get("first_epoch_at_process_age_s"),
            "finish_s": timings.get("finish_s"), "epochs_sum_s": sum(epochs_s),
            "replica_epochs": manifest.get("engine", {}).get("replica_epochs", 0),
            "epochs_s": epochs_s}


def cold_and_warm(seed: int = 1) -> dict:
    """One run with an empty numba cache (the first run on a new machine) and one with the cache it
    left, side by side. Waits for the background compilation to end before going on."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**ENV, "NUMBA_CACHE_DIR": cache}
        cold = mnistlab_train(seed, env=env)
        t0 = time.perf_counter()
        while subprocess.run(["pgrep", "-f", "mnistlab.engine.warm"], capture_output=True).stdout:
            time.sleep(0.5)
        cold["compile_left_after_run_s"] = time.perf_counter() - t0
        warm = mnistlab_train(seed, env=env)
    return {"cold": cold, "warm": warm}


def tutorial(seed: int) -> dict:
    out, wall, rss = run_rss([sys.executable, str(HERE / "tutorial_baseline.py"), "--epochs", "50"])
    r = json.loads(out.strip().splitlines()[-1])
    return {"s_per_epoch": statistics.median(r["epoch_seconds"][1:]), "wall": wall, "rss_mb": rss,
            "test_accuracy": r["test_accuracy"]}


def summarise(rows: list[dict]) -> dict:
    accs = [r["test_accuracy"] for r in rows]
    return {
        "s_per_epoch": statistics.median(r["s_per_epoch"] for r in rows),
        "wall": statistics.median(r["wall"] for r in rows),
        **{k: statistics.median(r[k] for r in rows) for k in ("to_first_epoch_s", "finish_s")
           if all(r.get(k) is not None for r in rows)},
        "acc_mean": statistics.mean(accs), "acc_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "rss_mb": max(r["rss_mb"] for r in rows), "runs": rows,
    }


def help_startup(n: int = 10) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "mnistlab"), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def growth() -> dict:
    """Per-epoch time (median of epochs 9-16) with the training data tiled 1x, 2x, 4x.

    Not the first eight: while Keras loads beside them (``mnistlab.headstart``, ~1.5 s), the
    epochs run on one thread, and the loop then compares thread settings
    (``engine.sgd_loop.SgdLoop._choose``).
    """
    import numpy as np

    from mnistlab.data import load_dataset

    ds = load_dataset("fashion_mnist")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in (1, 2, 4):
            path = Path(tmp) / f"x{k}.npz"
            np.savez(path, x_train=np.tile(ds.x_train, (k, 1, 1)), y_train=np.tile(ds.y_train, k),
                     x_test=ds.x_test, y_test=ds.y_test)
            run = mnistlab_train(1, extra=("--data", str(path)), epochs=16, skip=8)
            out[f"{k}x"] = run["s_per_epoch"]
            path.unlink()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-tutorial", action="store_true")
    args = ap.parse_args()
    res = {"loadavg_before": os.getloadavg(), "cpu_count": os.cpu_count()}
    tut, ours, loaded = [], [], []
    for seed in range(1, args.repeats + 1):
        if not args.skip_tutorial:
            tut.append(tutorial(seed))
            print(f"seed {seed} tutorial  {tut[-1]['s_per_epoch']:.3f} s/epoch", flush=True)
        mnistlab_train(seed, epochs=1)  # keeps the template of this seed's model files
        ours.append(mnistlab_train(seed))
        print(f"seed {seed} mnistlab  {ours[-1]['s_per_epoch']:.3f} s/epoch, "
              f"wall {ours[-1]['wall']:.1f} s", flush=True)
        loaded.append(mnistlab_train(seed, env=KERAS_LOADED))
        print(f"seed {seed} mnistlab, Keras imported (a model's first run)  "
              f"{loaded[-1]['s_per_epoch']:.3f} s/epoch, wall {loaded[-1]['wall']:.1f} s",
              flush=True)
    res["mnistlab"] = summarise(ours)
    res["mnistlab_keras_imported"] = summarise(loaded)
    if tut:
        res["tutorial"] = summarise(tut)
    run_rss([sys.executable, str(HERE / "predictor_speed.py"), "--repeats", "20"])
    pred = json.loads((HERE / "results" / "predictor_speed.json").read_text())
    rows = pred["rows"]
    res["predict_images_per_s"] = rows["10,000 uint8 images (ms)"]["images_per_s_best"]
    res["single_image_ms"] = rows["single image, predict_proba (ms)"]["median_ms"]
    res["help_s"] = help_startup()
    res["growth_s_per_epoch"] = growth()
    res["rss_5_epochs_mb"] = mnistlab_train(1, epochs=5)["rss_mb"]
    res["cold_cache"] = cold_and_warm()
    res["loadavg_after"] = os.getloadavg()

    print(f"\n{'':<26}{'s/epoch':>9}{'wall s':>9}{'test acc (mean ± sd)':>24}{'peak RSS':>10}")
    for name in ("tutorial", "mnistlab", "mnistlab_keras_imported"):
        if name in res:
            r = res[name]
            print(f"{name:<26}{r['s_per_epoch']:9.3f}{r['wall']:9.1f}"
                  f"{r['acc_mean']:16.4f} ± {r['acc_sd']:.4f}{r['rss_mb']:8.0f} MB")
    if "tutorial" in res:
        print(f"speed-up per epoch: {res['tutorial']['s_per_epoch'] / res['mnistlab']['s_per_epoch']:.1f}x")
    print(f"prediction, 10,000 images: {res['predict_images_per_s']:,.0f} images/s (best)")
    print(f"single image in-process:   {res['single_image_ms']:.3f} ms (median)")
    print(f"mnistlab --help:           {res['help_s']:.3f} s (median of 10)")
    g = res["growth_s_per_epoch"]
    print(f"s/epoch at 1x/2x/4x data:  {g['1x']:.3f} / {g['2x']:.3f} / {g['4x']:.3f}")
    print(f"peak RSS 5 vs 50 epochs:   {res['rss_5_epochs_mb']:.0f} / {res['mnistlab']['rss_mb']:.0f} MB")
    for name in ("mnistlab", "mnistlab_keras_imported"):
        m = res[name]
        print(f"{name}: process start to first epoch {m['to_first_epoch_s']:.2f} s, "
              f"finishing (evaluate, save) {m['finish_s']:.2f} s (medians)")
    cw = res["cold_cache"]
    print(f"empty numba cache: wall {cw['cold']['wall']:.1f} s vs {cw['warm']['wall']:.1f} s with "
          f"the cache it left (+{cw['cold']['wall'] - cw['warm']['wall']:.1f} s; "
          f"{cw['cold']['replica_epochs']} epochs on the numpy replica, compilation went on "
          f"{cw['cold']['compile_left_after_run_s']:.1f} s after the run)")
    folder = HERE / "results"
    folder.mkdir(exist_ok=True)
    path = folder / f"performance-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(res, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
