"""The literate examples run as documented (on small data)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_example_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tutorial.py"), "--dataset", "digits",
         "--epochs", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout and "predicted:" in out.stdout
    assert len(list(tmp_path.iterdir())) == 1
