"""What finishing without Keras saves a whole run (issue 18: the whole run in <= 7 s).

A head-start run of a model whose Keras files have a template (``mnistlab.keras_files``) never
imports Keras or JAX; without one (a model's first run, or ``MNISTLAB_KERAS_FILES=off``) it imports
them on a thread beside its first epochs, which run on one thread meanwhile. Each round runs
``mnistlab train --dataset fashion_mnist --no-report`` (the tutorial, 50 epochs) twice as whole
processes, alternating which goes first: with the template (kept by an untimed one-epoch run
before the rounds) and with templates off. Prints per-round figures and the medians of wall time,
the sum of the epochs' seconds, the start to the first epoch, the finish and the peak RSS; and,
less at the mercy of this machine's speed swings between runs, what epochs 2-8 (those beside
the Keras import, when there is one) took over 7 times the median of the run's later epochs.

Run:  .venv/bin/python bench/keras_files.py [--rounds 6] [--epochs 50]
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from performance import ENV, mnistlab_train  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as templates:
        kinds = {"template": {**ENV, "MNISTLAB_KERAS_FILES": templates},
                 "keras": {**ENV, "MNISTLAB_KERAS_FILES": "off"}}
        mnistlab_train(111, epochs=1, env=kinds["template"])  # keeps the template
        rows = {k: [] for k in kinds}
        for i in range(args.rounds):
            order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
            for kind in order:
                r = mnistlab_train(111, epochs=args.epochs, env=kinds[kind])
                e = r["epochs_s"]
                r["excess_s"] = sum(e[1:8]) - 7 * statistics.median(e[8:])
                rows[kind].append(r)
                print(f"round {i + 1} {kind:<9} wall {r['wall']:.2f} s, epochs {r['epochs_sum_s']:.2f}"
                      f" s (epochs 2-8 over the later median: {r['excess_s']:+.2f} s), first epoch "
                      f"at {r['to_first_epoch_s']:.2f} s, finish {r['finish_s']:.2f} s, RSS "
                      f"{r['rss_mb']:.0f} MB", flush=True)
    print(f"\nmedians of {args.rounds} rounds, {args.epochs} epochs:")
    for kind, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("wall", "epochs_sum_s", "excess_s", "to_first_epoch_s", "finish_s",
                         "rss_mb")}
        print(f"{kind:<9} wall {med['wall']:.2f} s, epochs {med['epochs_sum_s']:.2f} s (epochs 2-8 "
              f"{med['excess_s']:+.2f} s over 7 later ones), first "
              f"epoch at {med['to_first_epoch_s']:.2f} s, finish {med['finish_s']:.2f} s, peak "
              f"RSS {med['rss_mb']:.0f} MB")
    pairs = [a["wall"] / b["wall"] for a, b in zip(rows["template"], rows["keras"], strict=True)]
    print(f"wall ratio template/keras per round: median {statistics.median(pairs):.3f} "
          f"({', '.join(f'{p:.3f}' for p in pairs)})")


if __name__ == "__main__":
    main()
