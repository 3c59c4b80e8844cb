"""Seconds per epoch of the tutorial's training: the tutorial's code vs Keras/JAX fit vs fit_fast.

Each variant runs in its own subprocess (backends never mix), the variants alternate round by round
in one sitting, and a variant's figure is the median epoch time after its first (compiling) epoch,
validation included, as ``fit`` reports it. Peak RSS is each child's ``ru_maxrss``. Results go to
``bench/results/train_speed-<time>.json``.

Run:  .venv/bin/python bench/train_speed.py                       # 3 rounds of 6 epochs
      .venv/bin/python bench/train_speed.py --full                # + one 50-epoch fit_fast wall
      .venv/bin/python bench/train_speed.py --accuracy-seeds 5    # + 50-epoch accuracy, 5 seeds

Data: full-size Fashion-MNIST from /usr/share/datasets/fashion-mnist, split 70/30 with
random_state=111 (42,000 train / 18,000 val: 329 + 141 batches of 128), SGD lr 0.01, MLP
784-100-64-32-10, 50 epochs.

Research notes (step 1, same machine, 2 vCPU AVX-512, shared with other jobs, median of 3-5
epochs after warm-up, training only; validation 141 batches listed separately):
  (a) Keras fit, JAX, float32, steps_per_execution=32 ........ 0.29 s  (val 0.07 s)
  (b) whole epoch as one jitted lax.scan, Keras stateless_call
      + optimizer.stateless_apply, data on device ............. 0.29 s  (val 0.04 s)
  (c) same with a hand-written JAX MLP and jax.grad ........... 0.275 s (val 0.06 s)
  (d) hand-written float32 numpy, OpenBLAS sgemm into
      preallocated buffers, in-place SGD, 1 BLAS thread ....... 0.235 s (val 0.04 s)
      the same with 2 BLAS threads ............................. 1.5-2.5 s: with two cores and
      other processes running, OpenBLAS' worker thread spins and loses its core; even alone,
      big-gemm / elementwise / big-gemm sequences were up to 3x slower than with 1 thread.
  Variants of (c), measured side by side at load average 6-9: lax.scan unroll=4 0.33 s vs 0.27 s
  unrolled once; XLA_FLAGS=--xla_cpu_multi_thread_eigen=false 0.42 s (c) and 0.48 s (a), slower.
  (bench/results/ is git-ignored; the raw log stays on the machine that ran it.)
  The arithmetic of (d) is two 128x784x100 sgemms per step (~215 us each on one core, 93 GFLOP/s);
  the rest is numpy call overhead (~60 small ops per step). fit_fast uses (d) for SGD and (c)
  with optimizer.stateless_apply for every other optimizer.
  Later (2026-11-29, mnistlab.engine.numpy_loop): the two big products on two pinned OpenBLAS threads,
  bit-identical to one, and cheaper small ops: 0.284 -> 0.189 s/epoch side by side
  (bench/fastloop_compare.py), ~0.20 s inside `mnistlab train` (bench/performance.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = "/usr/share/datasets/fashion-mnist"


# --------------------------------------------------------------------------- workers
def load_split():
    """Fashion-MNIST as the tutorial splits it: float32 images in [0, 1], int64 labels."""
    import gzip

    import numpy as np
    from sklearn.model_selection import train_test_split

    def read(name, offset):
        with gzip.open(f"{DATA}/{name}") as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    def scale(a):  # straight to float32: a float64 temporary would add ~260 MB of peak RSS
        return np.divide(a, np.float32(255), dtype=np.float32)

    x = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    y = read("train-labels-idx1-ubyte.gz", 8).astype(np.int64)
    xt = scale(read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28))
    yt = read("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.3, random_state=111)
    return scale(x_tr), y_tr, scale(x_va), y_va, xt, yt


def tutorial_model(keras, seed):
    """The tutorial's MLP with seeded initializers.

    Seeded per layer rather than with ``keras.utils.set_random_seed``, which imports TensorFlow
    whenever it is installed and so adds ~200 MB to the peak RSS of a JAX-only process.
    """
    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 100 + i)  # noqa: E731
    dense = [
        (100, "relu", "dense1"),
        (64, "relu", "dense2"),
        (32, "relu", "dense3"),
        (10, "softmax", "output"),
    ]
    return keras.Sequential(
        [keras.Input((28, 28)), keras.layers.Flatten(name="flatten")]
        + [
            keras.layers.Dense(u, activation=a, name=n, kernel_initializer=init(i))
            for i, (u, a, n) in enumerate(dense)
        ]
    )


def worker(variant: str, epochs: int, seed: int, t_start: float) -> dict:
    """Train in this process and return timings; ``variant`` is keras-jax-fit or fit-fast."""
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import numpy as np

    x, y, xv, yv, xt, yt = load_split()
    model = tutorial_model(keras, seed)
    times = []
    last = [0.0]

    class Timer(keras.callbacks.Callback):
        # fit_fast calls on_epoch_end of any object; keras fit needs a Callback.
        def on_epoch_begin(self, epoch, logs=None):
            last[0] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - last[0])

    t_train = time.perf_counter()
    last[0] = t_train
    if variant == "keras-jax-fit":
        model.compile(
            optimizer=keras.optimizers.SGD(0.01),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=32,
        )
        eye = np.eye(10, dtype=np.float32)
        hist = model.fit(
            x,
            eye[y],
            validation_data=(xv, eye[yv]),
            batch_size=128,
            epochs=epochs,
            shuffle=True,
            verbose=0,
            callbacks=[Timer()],
        ).history
    else:
        from mnistlab.engine import fit_fast

        hist = fit_fast(
            model,
            x,
            y,
            xv,
            yv,
            epochs=epochs,
            batch_size=128,
            seed=seed,
            optimizer=keras.optimizers.SGD(0.01),
            callbacks=[Timer()],
        )
    train_seconds = time.perf_counter() - t_train
    test_acc = float(
        (np.asarray(model.predict(xt, batch_size=1024, verbose=0)).argmax(1) == yt).mean()
    )
    return {
        "epoch_seconds": times,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - t_start,
        "val_accuracy": hist["val_accuracy"][-1],
        "test_accuracy": test_acc,
    }


# --------------------------------------------------------------------------- driver
VARIANTS = {
    "tutorial (Keras3/TF, float64, fit)": [str(HERE / "tutorial_baseline.py")],
    "keras-jax-fit (float32, spe=32)": [__file__, "--worker", "keras-jax-fit"],
    "fit_fast (mnistlab.engine)": [__file__, "--worker", "fit-fast"],
}


def run_child(args: list[str], epochs: int, seed: int = 1) -> dict:
    """Run one variant in a subprocess; return its JSON, its own peak RSS (``os.wait4``) and wall."""
    t0 = time.perf_counter()
    cmd = [sys.executable, *args, "--epochs", str(epochs)]
    if "--worker" in args:
        cmd += ["--seed", str(seed)]
    with open(os.devnull, "w") as devnull:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=devnull, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["outside_wall_seconds"] = time.perf_counter() - t0
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6, help="epochs per timing run")
    ap.add_argument("--full", action="store_true", help="also time one 50-epoch fit_fast run")
    ap.add_argument(
        "--accuracy-seeds",
        type=int,
        default=0,
        help="50-epoch test accuracy of fit_fast vs keras-jax-fit over this many seeds",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs, args.seed, T_START)))
        return

    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name, child in VARIANTS.items():
            res = run_child(child, args.epochs)
            runs[name].append(res)
            print(f"round {r + 1}: {name}: {res['epoch_seconds'][1:]}", file=sys.stderr)
    table = {}
    for name, results in runs.items():
        steady = [t for res in results for t in res["epoch_seconds"][1:]]
        table[name] = {
            "median_s_per_epoch": statistics.median(steady),
            "min_s_per_epoch": min(steady),
            "first_epoch_s": statistics.median(res["epoch_seconds"][0] for res in results),
            "peak_rss_mb": max(res["peak_rss_mb"] for res in results),
            "process_wall_s": statistics.median(res["outside_wall_seconds"] for res in results),
        }
    report = {
        "timing_runs": runs,
        "table": table,
        "epochs_per_run": args.epochs,
        "rounds": args.rounds,
    }
    if args.full:
        full = run_child(VARIANTS["fit_fast (mnistlab.engine)"], 50)
        report["fit_fast_50_epochs"] = full
    if args.accuracy_seeds:
        acc = {"fit_fast": [], "keras_jax_fit": []}
        for seed in range(args.accuracy_seeds):
            for key, variant in (("fit_fast", "fit-fast"), ("keras_jax_fit", "keras-jax-fit")):
                res = run_child([__file__, "--worker", variant], 50, seed=seed)
                acc[key].append(res["test_accuracy"])
                print(f"accuracy seed {seed} {key}: {res['test_accuracy']:.4f}", file=sys.stderr)
        report["accuracy_50_epochs"] = acc
    report["loadavg_before"] = load_before
    report["loadavg_after"] = os.getloadavg()
    report["cpu_count"] = os.cpu_count()

    lines = [
        f"{'variant':40s} {'s/epoch':>8s} {'min':>7s} {'1st':>7s} {'RSS MB':>7s} {'proc wall':>9s}"
    ]
    for name, row in table.items():
        lines.append(
            f"{name:40s} {row['median_s_per_epoch']:8.3f} {row['min_s_per_epoch']:7.3f} "
            f"{row['first_epoch_s']:7.3f} {row['peak_rss_mb']:7.0f} "
            f"{row['process_wall_s']:9.1f}"
        )
    if args.full:
        f = report["fit_fast_50_epochs"]
        lines.append(
            f"fit_fast 50 epochs: training {f['train_seconds']:.1f} s, process wall "
            f"{f['outside_wall_seconds']:.1f} s, peak RSS {f['peak_rss_mb']:.0f} MB, "
            f"val acc {f['val_accuracy']:.4f}, test acc {f['test_accuracy']:.4f}"
        )
    if args.accuracy_seeds:
        a = report["accuracy_50_epochs"]
        lines.append(
            f"test accuracy over {args.accuracy_seeds} seeds: fit_fast "
            f"{statistics.mean(a['fit_fast']):.4f}, keras-jax-fit "
            f"{statistics.mean(a['keras_jax_fit']):.4f}"
        )
    lines.append(f"load average before/after: {load_before} / {report['loadavg_after']}")
    print("\n".join(lines))

    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"train_speed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)
    print(f"wrote {path}")


T_START = time.perf_counter()
if __name__ == "__main__":
    main()
