"""A full disk (a real tmpfs of a few hundred KiB) gives a clear error and keeps what was there.

Needs permission to mount a tmpfs (root); the tests skip with the reason otherwise.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import ENV, MNISTLAB, fill, temp_leftovers

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


@pytest.mark.parametrize("free_share", [0.0, 0.35, 0.7])
def test_disk_filling_up_during_training_then_resume(small_fs, digits_cfg, free_share):
    """Run A completes; the disk is then filled to leave a share of A's size free, so that run B
    fails at whichever write first does not fit (its manifest, a checkpoint, a model file...).
    A is untouched, B has no half-written file, and after freeing space B resumes (when it got as
    far as a checkpoint) to the same weights as A."""
    fs = small_fs("1m")
    a = train(digits_cfg, out=fs, command=["test"], report=False)
    before = _hashes(a.path)
    used = sum(p.stat().st_blocks * 512 for p in a.path.iterdir())
    filler = fill(fs, leave=int(free_share * used))
    with pytest.raises(DiskFullError, match=DISK_FULL) as e:
        train(digits_cfg, out=fs, command=["test"], report=False)
    assert _hashes(a.path) == before
    assert temp_leftovers(fs) == []
    (b_dir,) = [p for p in fs.iterdir() if p.is_dir() and p != a.path]
    failed_on = re.search(r"while writing (.+)\. Free", str(e.value)).group(1)
    assert Path(failed_on).parent == b_dir and not Path(failed_on).exists() or (
        Path(failed_on).name in before)  # a new file was not created, or an old one is intact
    _check_run_files_parse(b_dir)
    filler.unlink()
    if not (b_dir / "manifest.json").exists():
        # nothing but the (empty) lock file is left
        assert free_share == 0.0 and [p.name for p in b_dir.iterdir()] == [".run.lock"]
        return
    b = load_run(b_dir, require_complete=False)
    # The error is recorded when the disk allows it ("failed"); otherwise the manifest still says
    # "running", and as no process holds the run's lock any more, it is shown as interrupted.
    assert b.status in ("failed", "interrupted")
    if b.status == "failed":
        assert b.manifest["error"].startswith("DiskFullError: no space left")
    if not (b_dir / "checkpoint.npz").exists():
        from mnistlab.errors import RunError

        with pytest.raises(RunError, match="no checkpoint.npz"):
            train(resume=b_dir, report=False)
        return
    done = train(resume=b_dir, report=False)
    assert done.is_complete and [r["epoch"] for r in done.history] == [1, 2, 3]
    assert compare_weights(a.load_model(), done.load_model())
    print(f"free {free_share:.0%} of a run: failed on {Path(failed_on).name}")


_SAVE_SWEEP = textwrap.dedent("""
    import os, sys, warnings
    from pathlib import Path
    import keras
    from mnistlab.files import DiskFullError, save_with
    fs, name, stage = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "stage"
    leaves = [int(x) for x in sys.argv[4:]]
    inp = keras.Input((8, 8))
    x = keras.layers.Dense(64)(keras.layers.Dense(100)(keras.layers.Flatten()(inp)))
    model = keras.Model(inp, keras.layers.Dense(10)(x))
    warnings.simplefilter("ignore")
    for leave in leaves:
        filler = fs / "filler.bin"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(bytes(1 << 16))
            except OSError:
                pass
        os.truncate(filler, max(0, filler.stat().st_size - leave))
        try:
            save_with(fs / name, model.save, suffix=Path(name).suffix, stage_in_memory=stage)
            print(leave, "saved", flush=True)
        except DiskFullError:
            print(leave, "DiskFullError", flush=True)
        filler.unlink()
        (fs / name).unlink(missing_ok=True)
""")


@pytest.mark.slow  # about 16 s each: fills a small file system step by step
@pytest.mark.parametrize("name, staging", [("model.h5", "stage"), ("model.keras", "direct")])
def test_model_save_on_a_full_disk_is_a_clean_error_not_a_crash(small_fs, name, staging):
    """HDF5 writing straight onto a disk that fills up mid-file can kill the process (SIGSEGV in
    h5py's cleanup) or raise RuntimeError("Can't destroy cache"), so model.h5 is written in memory
    first (training does the same). ``.keras`` (a zip) copes with ENOSPC and is written directly.
    Every amount of free space ends in DiskFullError or a saved file, in a child process so that a
    crash shows as a failure."""
    fs = small_fs("1m")
    leaves = [0, 4096, 16384, 32768, 49152, 65536, 81920, 200_000]
    res = subprocess.run([sys.executable, "-c", _SAVE_SWEEP, str(fs), name, staging, *map(str, leaves)],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    outcome = dict(line.split() for line in res.stdout.splitlines())
    assert set(outcome) == set(map(str, leaves)), res.stdout
    assert set(outcome.values()) <= {"saved", "DiskFullError"}
    assert outcome["0"] == "DiskFullError" and outcome["200000"] == "saved"
    assert temp_leftovers(fs) == []


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
