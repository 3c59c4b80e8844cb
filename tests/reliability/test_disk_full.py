"""A full disk (a real tmpfs of a few hundred KiB) gives a clear error and keeps what was there.

Needs permission to mount a tmpfs (root); the tests skip with the reason otherwise.
"""

from __future__ import annotations

import json
import re
import subprocess
import warnings

import numpy as np
import pytest
from conftest import ENV, MNISTLAB, fill, temp_leftovers

from mnistlab.config import load_config
from mnistlab.files import DiskFullError, save_npz, save_with, sha256_file, write_json, write_text
from mnistlab.runs import load_run
from mnistlab.training import compare_weights, train

DISK_FULL = r"no space left on the device while writing .*Free some disk space and retry; earlier files were left intact"


def _hashes(root):
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _check_run_files_parse(run_dir):
    """Every artifact present in a run directory is complete (none is half-written)."""
    for p in run_dir.iterdir():
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                [z[k] for k in z.files]


@pytest.fixture(scope="module")
def digits_cfg():
    return load_config(overrides=["train.epochs=3"], data__dataset="digits")


def test_full_disk_while_saving_keeps_earlier_artifacts(small_fs, digits_cfg):
    fs = small_fs("1m")
    run = train(digits_cfg, out=fs, command=["test"], report=False)
    before = _hashes(fs)
    model = run.load_model()
    fill(fs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras's legacy-HDF5 note
        for name, suffix in (("model.keras", ".keras"), ("model.h5", ".h5")):
            with pytest.raises(DiskFullError, match=DISK_FULL) as e:
                save_with(run.file(name), model.save, suffix=suffix)
            assert name in str(e.value)
    with pytest.raises(DiskFullError, match=DISK_FULL):
        write_json(run.file("metrics.json"), {"pad": "x" * 100_000})
    with pytest.raises(DiskFullError, match=DISK_FULL):
        save_npz(run.file("checkpoint.npz"), w=np.random.default_rng(0).random(100_000))
    with pytest.raises(DiskFullError, match=DISK_FULL):
        write_text(run.file("report.html"), "<html>" + "x" * 100_000)
    assert not run.file("report.html").exists()
    (fs / "filler.bin").unlink()
    assert _hashes(fs) == {k: v for k, v in before.items() if k != "filler.bin"}
    assert temp_leftovers(fs) == []
    assert compare_weights(model, load_run(run.path).load_model())


@pytest.mark.parametrize("free_kib, fails_on", [
    (0, "manifest.json"),  # the very first file of the new run
    (100, "checkpoint.npz"),  # the second epoch's checkpoint (old + new copy do not fit)
    (200, "model.h5"),  # after training, the second model file
])
def test_disk_filling_up_during_training_then_resume(small_fs, digits_cfg, free_kib, fails_on):
    """Run A completes; the disk is then filled so that run B fails at one of its writes. A is
    untouched, B has no half-written file, and after freeing space B resumes (when it has a
    checkpoint) to the same weights as A."""
    fs = small_fs("1m")
    a = train(digits_cfg, out=fs, command=["test"], report=False)
    before = _hashes(a.path)
    filler = fill(fs, leave=free_kib * 1024)
    with pytest.raises(DiskFullError, match=DISK_FULL) as e:
        train(digits_cfg, out=fs, command=["test"], report=False)
    assert f"{fails_on}. Free some disk space" in str(e.value)
    assert _hashes(a.path) == before
    assert temp_leftovers(fs) == []
    (b_dir,) = [p for p in fs.iterdir() if p.is_dir() and p != a.path]
    _check_run_files_parse(b_dir)
    filler.unlink()
    if fails_on == "manifest.json":
        assert list(b_dir.iterdir()) == []  # an empty directory is all that is left
        return
    b = load_run(b_dir, require_complete=False)
    assert b.status == "running"  # the disk was too full to record anything else
    done = train(resume=b_dir, report=False)
    assert done.is_complete and [r["epoch"] for r in done.history] == [1, 2, 3]
    assert compare_weights(a.load_model(), done.load_model())


def test_out_of_inodes_is_a_disk_full_error(small_fs):
    """ENOSPC can come from creating the temporary file itself (no inodes left)."""
    fs = small_fs("1m", inodes=8)
    write_json(fs / "metrics.json", {"ok": 1})
    i = 0
    while True:
        try:
            (fs / f"f{i}").touch()
        except OSError:
            break
        i += 1
    with pytest.raises(DiskFullError, match=DISK_FULL):
        write_json(fs / "metrics.json", {"ok": 2})
    assert json.loads((fs / "metrics.json").read_text()) == {"ok": 1}


def test_cli_on_a_full_disk_says_so_without_traceback(small_fs):
    fs = small_fs("1m")
    fill(fs, leave=100 * 1024)
    res = subprocess.run(
        [MNISTLAB, "train", "--dataset", "digits", "--epochs", "3", "--no-report", "--out", str(fs)],
        capture_output=True, text=True, env=ENV, timeout=600,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"Error: " + DISK_FULL, last), last
    assert temp_leftovers(fs) == []
