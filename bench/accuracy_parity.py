"""Does mnistlab's fast loop cost accuracy? Test accuracy over several seeds, side by side.

Variants, each 50 epochs of the tutorial recipe (SGD lr 0.01, batch 128, MLP 784-100-64-32-10,
30 % validation with random_state=111) on full-size Fashion-MNIST:

* ``keras-fit``: plain Keras ``model.fit(..., shuffle=True)`` (per-epoch reshuffling), the model built
  as the tutorial does (default initialisers after ``keras.utils.set_random_seed(seed)``);
* ``mnistlab-fast``: ``mnistlab train --loop fast --seed S`` (the library call);
* ``mnistlab-fit``: ``mnistlab train --loop fit --seed S`` (plain fit on mnistlab's seeded order).

Each run is a subprocess; variants alternate per seed. Prints mean ± sd of test accuracy and writes
JSON to bench/results/.

Run:  .venv/bin/python bench/accuracy_parity.py --seeds 5 [--epochs 50] [--variants a,b]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time, tempfile
variant, seed, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
if variant == "keras-fit":
    import keras, numpy as np
    from mnistlab.data import load_dataset
    from mnistlab.data.split import split_train_val
    ds = load_dataset("fashion_mnist")
    tr, va = split_train_val(ds.y_train, 0.3, 111)
    x = ds.x_train.astype("float32") / 255.0
    eye = np.eye(10, dtype="float32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
        keras.layers.Dense(100, activation="relu"), keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[tr], eye[ds.y_train[tr]], batch_size=128, epochs=epochs, shuffle=True,
              validation_data=(x[va], eye[ds.y_train[va]]), verbose=0)
    loss, acc = model.evaluate(ds.x_test.astype("float32") / 255.0, eye[ds.y_test], verbose=0)
else:
    from mnistlab.config import load_config
    from mnistlab.training import train
    loop = variant.split("-")[1]
    cfg = load_config(overrides=[f"train.loop={loop}", f"train.epochs={epochs}"],
                      data__dataset="fashion_mnist", seed=seed)
    run = train(cfg, out=tempfile.mkdtemp(), report=False)
    acc = run.metrics["test_accuracy"]
print(json.dumps({"variant": variant, "seed": seed, "test_accuracy": acc,
                  "seconds": time.perf_counter() - t0}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--variants", default="keras-fit,mnistlab-fast")
    args = ap.parse_args()
    variants = args.variants.split(",")
    results = {v: [] for v in variants}
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    for seed in range(1, args.seeds + 1):
        for v in variants:
            out = subprocess.run([sys.executable, "-c", CHILD, v, str(seed), str(args.epochs)],
                                 capture_output=True, text=True, env=env, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results[v].append(row)
            print(f"seed {seed} {v:<14} test accuracy {row['test_accuracy']:.4f} "
                  f"({row['seconds']:.0f} s)", flush=True)
    print(f"\n{'variant':<14} {'mean':>7} {'sd':>7}  (n={args.seeds}, {args.epochs} epochs)")
    summary = {}
    for v, rows in results.items():
        accs = [r["test_accuracy"] for r in rows]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        summary[v] = {"mean": statistics.mean(accs), "sd": sd, "runs": rows}
        print(f"{v:<14} {summary[v]['mean']:7.4f} {sd:7.4f}")
    folder = Path(__file__).parent / "results"
    folder.mkdir(exist_ok=True)
    path = folder / f"accuracy_parity-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
