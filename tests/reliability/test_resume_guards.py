"""``--resume`` on damaged or busy run directories: a clear RunError/DataError, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mnistlab.cli import cli
from mnistlab.config import load_config
from mnistlab.errors import DataError, RunError, TrainingInterrupted
from mnistlab.runs import list_runs, load_run
from mnistlab.training import train


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A digits run planned for 2 epochs, stopped by SIGINT after epoch 1."""
    def stop(epoch, epochs, logs):
        os.kill(os.getpid(), signal.SIGINT)

    cfg = load_config(overrides=["train.epochs=2"], data__dataset="digits")
    out = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(TrainingInterrupted):
        train(cfg, out=out, command=["test"], report=False, progress=stop)
    (run_dir,) = out.iterdir()
    return run_dir


@pytest.fixture
def run_copy(interrupted, tmp_path):
    return shutil.copytree(interrupted, tmp_path / interrupted.name)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "wrong_arrays"])
def test_damaged_checkpoint_is_a_clear_error(run_copy, damage):
    ck = run_copy / "checkpoint.npz"
    data = ck.read_bytes()
    if damage == "truncated":
        ck.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        ck.write_bytes(b"\x00garbage" * 100)
    elif damage == "empty":
        ck.write_bytes(b"")
    else:
        import numpy as np

        np.savez(ck, model_0=np.zeros(3), epochs_done=np.int64(1))
    with pytest.raises(RunError, match="cannot be resumed"):
        train(resume=run_copy, report=False)
    res = CliRunner().invoke(cli, ["train", "--resume", str(run_copy)])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "cannot be resumed" in res.output


def test_missing_checkpoint_says_start_a_new_run(run_copy):
    (run_copy / "checkpoint.npz").unlink()
    with pytest.raises(RunError, match="no checkpoint.npz: it stopped before finishing its first epoch"):
        train(resume=run_copy, report=False)


_HOLD = """
import sys, time
from pathlib import Path
from mnistlab.runlock import RunLock
lock = RunLock.take(Path(sys.argv[1]))
print("HELD" if lock else "BUSY", flush=True)
time.sleep(120)
"""


def test_run_still_being_trained_by_a_live_process_is_refused(run_copy):
    """Another process holds the run's lock (as a trainer does): --resume is refused, and
    `mnistlab runs` shows the run as running. Once that process is gone, the run resumes."""
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest.update(status="running", pid=12345)
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    other = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_copy)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline().strip() == "HELD"  # the lock is held from here on
        with pytest.raises(RunError, match="still being trained by process 12345"):
            train(resume=run_copy, report=False)
        assert load_run(run_copy, require_complete=False).status == "running"
    finally:
        other.kill()
        other.wait()
        other.stdout.close()
    # Killed: nobody holds the lock, so the recorded "running" is shown as interrupted.
    assert load_run(run_copy, require_complete=False).status == "interrupted"
    assert train(resume=run_copy, report=False).is_complete


def test_resume_removes_leftover_temporary_files(run_copy):
    """A killed write leaves a hidden temporary file; resuming (under the run's lock) removes it."""
    leftovers = [".checkpoint.npz.0badc0de.tmp.npz", ".history.csv.12345678.tmp",
                 ".manifest.json.abcdef01.tmp", ".model.keras.00000000.tmp.keras"]
    for name in leftovers:
        (run_copy / name).write_bytes(b"half a file")
    (run_copy / "notes.tmp").write_text("not ours")  # not an atomic-write name: kept
    done = train(resume=run_copy, report=False)
    assert done.is_complete
    assert not any((run_copy / name).exists() for name in leftovers)
    assert (run_copy / "notes.tmp").read_text() == "not ours"


def test_changed_data_is_refused(run_copy):
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["dataset"]["sha256"] = {"digits": "0" * 64}
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="changed since .* started"):
        train(resume=run_copy, report=False)


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", "42", "\xff\xfe"])
def test_corrupt_manifest_is_a_clear_error(run_copy, text):
    (run_copy / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(RunError, match="corrupt"):
        load_run(run_copy, require_complete=False)
    res = CliRunner().invoke(cli, ["train", "--resume", str(run_copy)])
    assert res.exit_code == 1 and "Error: " in res.output and "corrupt" in res.output
    assert list_runs(run_copy.parent) == []  # listing skips it instead of crashing
    res = CliRunner().invoke(cli, ["runs", str(run_copy.parent)])
    assert res.exit_code == 0, res.output


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        train(resume=tmp_path, report=False)
    with pytest.raises(RunError, match="run directory not found"):
        train(resume=tmp_path / "nope", report=False)
