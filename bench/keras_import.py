"""How long importing Keras takes, and how much of it is ml_dtypes (issue 18: a run's Keras load).

A run imports Keras (with JAX) on a thread beside its first epochs, which train on one thread
meanwhile: every second of that import costs about half a second of the run. ml_dtypes 0.7.0's
own import took 0.44-0.49 s of it (0.6.0: 0.01 s), hence the pin in pyproject.toml.

Each round starts fresh processes, alternating: ``import ml_dtypes`` (after numpy), then
mnistlab's ``import_keras()`` (KERAS_BACKEND=jax), with the installed ml_dtypes and, given
``--other DIR`` (an unpacked wheel of another version, put first on ``PYTHONPATH``), with that one.

Run:  .venv/bin/python bench/keras_import.py [--rounds 5] [--other /tmp/ml_dtypes-0.7.0]
(to get one: pip download ml_dtypes==0.7.0 --no-deps -d /tmp/w && unzip /tmp/w/*.whl -d DIR)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, time
import numpy
t = time.perf_counter()
import ml_dtypes
dtypes = time.perf_counter() - t
from mnistlab.backend import import_keras
t = time.perf_counter()
import_keras()
print(json.dumps({"version": ml_dtypes.__version__, "ml_dtypes": dtypes,
                  "keras": time.perf_counter() - t + dtypes}))
"""


def one(path: str | None) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env,
                          check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--other", help="a folder holding another ml_dtypes package")
    args = parser.parse_args()
    kinds = [None] + ([args.other] if args.other else [])
    rows = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k in kinds:
            rows[k].append(one(k))
    print(f"median of {args.rounds} fresh processes each, seconds")
    for k in kinds:
        r = rows[k]
        print(f"ml_dtypes {r[0]['version']:8s} ({'installed' if k is None else k}): "
              f"import ml_dtypes {statistics.median(x['ml_dtypes'] for x in r):.3f}, "
              f"Keras with it {statistics.median(x['keras'] for x in r):.3f}")


if __name__ == "__main__":
    main()
