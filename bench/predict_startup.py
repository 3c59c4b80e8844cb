"""Start-up of ``mnistlab predict RUN one.png``: with predictor.npz (numpy only) and without (Keras).

    python bench/predict_startup.py RUN [--repeats 5]

Runs whole processes, as a user does: ``mnistlab predict RUN one.png`` for the run as it is, and
for a copy of it without ``predictor.npz`` (an older run: the model is loaded through Keras), in
turns, ``--repeats`` times each, and prints the median and best wall time of each. Also times
``mnistlab --help`` and lists which heavy modules ``import mnistlab.cli`` loads (none expected).
Issue #17's target: at most 1.5 s for ``predict RUN one.png``. The run must hold a predictor.npz
(trained by this version); the copy goes to a temporary folder that is removed at the end.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _mnistlab() -> list[str]:
    exe = Path(sys.executable).parent / "mnistlab"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mnistlab"]


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    return elapsed


def _without_predictor(run: Path, folder: Path) -> Path:
    """A copy of ``run`` as an older version wrote it: no predictor.npz, nothing in the manifest."""
    copy = Path(shutil.copytree(run, folder / run.name, ignore=shutil.ignore_patterns("*.png",
                                                                                       "report.html")))
    (copy / "predictor.npz").unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"].pop("predictor.npz")
    manifest.pop("predictor", None)
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy


def _one_png(folder: Path) -> Path:
    img = np.full((120, 90), 235, np.uint8)
    img[20:100, 40:52] = 20  # a thick vertical stroke: a "1"
    Image.fromarray(img).save(folder / "one.png")
    return folder / "one.png"


def _heavy_imports_of_cli() -> str:
    code = ("import sys, mnistlab.cli; "
            "print(','.join(m for m in ('keras', 'jax', 'tensorflow', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a complete run directory with predictor.npz")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not (args.run / "predictor.npz").is_file():
        raise SystemExit(f"{args.run} has no predictor.npz; train a run with this version first")
    base = _mnistlab()
    with tempfile.TemporaryDirectory(prefix="mnistlab-bench-") as tmp:
        tmp = Path(tmp)
        older, one = _without_predictor(args.run, tmp), _one_png(tmp)
        cases = {"with predictor.npz": args.run, "without (Keras)": older}
        times = {name: [] for name in cases}
        help_times = []
        for _ in range(args.repeats):  # in turns, so a busy spell hits both alike
            for name, run in cases.items():
                times[name].append(_wall([*base, "predict", str(run), str(one)]))
            help_times.append(_wall([*base, "--help"]))
    print(f"mnistlab predict RUN one.png, {args.repeats} processes each (wall seconds)")
    for name, ts in times.items():
        print(f"  {name:<20} median {statistics.median(ts):.2f}  best {min(ts):.2f}  "
              f"all {' '.join(f'{t:.2f}' for t in ts)}")
    print(f"mnistlab --help      median {statistics.median(help_times):.2f}  best {min(help_times):.2f}")
    print(f"import mnistlab.cli loads: {_heavy_imports_of_cli()}")


if __name__ == "__main__":
    main()
