"""How long does the default search take on full Fashion-MNIST, and how good is what it finds?

Runs the same thing as

    mnistlab tune --dataset fashion_mnist --trials 60 --workers W --study bench-<time> --out DIR

(the default MLP space: 1-3 layers of 64-512 units, relu/tanh, dropout, SGD/Adam/RMSprop, learning
rate, momentum, batch size 64-256, 10-40 epochs; median pruning from epoch 3; TPE seeded with 111) through the library,
then prints the wall time of the search, the wall time of the whole command (search + retraining the
best) and the retrained run's test accuracy. The tutorial preset gets about 0.847 on this data.

Run:  .venv/bin/python bench/tune_fashion.py [--trials 60] [--workers 2] [--timeout S] [--out DIR]
"""

import argparse
import json
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="/tmp/tune-bench")
    ap.add_argument("--timeout", type=float, help="start no new trial after S seconds")
    args = ap.parse_args()

    from mnistlab.config import load_config
    from mnistlab.data import load_dataset
    from mnistlab.tune.study import tune

    cfg = load_config("tutorial", data__dataset="fashion_mnist")
    ds = load_dataset("fashion_mnist")
    name = time.strftime("bench-%Y%m%d-%H%M%S")
    times = {}

    def progress(event):
        if event["kind"] == "retrain":
            times["search"] = time.perf_counter() - t0
        else:
            value = "" if event["value"] is None else f"{event['value']:.4f}"
            print(f"trial {event['number']:>3} {event['state']:<8} {value:<7} "
                  f"{event['epochs']:>2} epochs {event['seconds'] or 0:6.1f}s", flush=True)

    t0 = time.perf_counter()
    result = tune(cfg, trials=args.trials, workers=args.workers, study=name, out=args.out,
                  timeout=args.timeout,
                  dataset=ds, progress=progress, command=["bench/tune_fashion.py"])
    total = time.perf_counter() - t0
    s = result.summary
    if result.interrupted:
        print(f"stopped by a signal after {total:.0f} s: {s['trials']}; run again to continue")
        return
    print(json.dumps({k: s[k] for k in ("trials", "best", "retrained", "workers",
                                        "threads_per_worker")}, indent=2))
    done = sum(s["trials"].values())
    print(f"search wall time: {times.get('search', total):.0f} s for {done} trials on "
          f"{args.workers} worker(s); with retraining the best: {total:.0f} s")
    print(f"retrained test accuracy: {s['retrained']['test_accuracy']:.4f} "
          f"(study folder {Path(result.folder)})")


if __name__ == "__main__":
    main()
