"""Kill a real ``mnistlab train`` mid-epoch, resume it, and get the uninterrupted result bit for bit.

Digits with batch size 1 makes an epoch take a fraction of a second (about 1000 steps), so a signal
sent as soon as history.csv has its first row lands in the middle of a later epoch.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from reliability_helpers import ENV, MNISTLAB, temp_leftovers

from mnistlab.cli import cli
from mnistlab.config import load_config
from mnistlab.runs import load_run
from mnistlab.training import compare_weights, train

EPOCHS = 8
ARGS = ["--dataset", "digits", "--epochs", str(EPOCHS), "--set", "train.batch_size=1", "--no-report",
        "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run with the same settings (trained in-process: same code, same seed)."""
    cfg = load_config(overrides=["train.batch_size=1"], data__dataset="digits", train__epochs=EPOCHS)
    return train(cfg, out=tmp_path_factory.mktemp("reference"), command=["test"], report=False)


def _history_rows(run_dir: Path) -> int:
    try:
        with open(run_dir / "history.csv", newline="") as f:
            return len(list(csv.DictReader(f)))
    except FileNotFoundError:
        return 0


def _start_and_wait_for_first_epoch(out: Path) -> tuple[subprocess.Popen, Path, int]:
    proc = subprocess.Popen([MNISTLAB, "train", *ARGS, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
        if runs and (rows := _history_rows(runs[0])) >= 1:
            return proc, runs[0], rows
        if proc.poll() is not None:
            pytest.fail(f"train exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no epoch finished within 10 minutes")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _resume_and_compare(run_dir: Path, reference, resumed_from: int) -> None:
    res = subprocess.run([MNISTLAB, "train", "--resume", str(run_dir), "--no-report", "--quiet"],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"Run directory: {run_dir}" in res.stdout
    done = load_run(run_dir)
    assert done.is_complete and done.manifest["resumed_from_epoch"] == resumed_from
    assert [r["epoch"] for r in done.history] == list(range(1, EPOCHS + 1))
    assert done.config == reference.config
    np.testing.assert_array_equal([r["val_loss"] for r in done.history],
                                  [r["val_loss"] for r in reference.history])
    assert compare_weights(reference.load_model(), done.load_model())
    assert done.metrics["test_loss"] == reference.metrics["test_loss"]
    assert temp_leftovers(run_dir) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_sigterm_stop_after_the_epoch_and_resume_bit_identical(tmp_path, reference, sig):
    proc, run_dir, rows_at_signal = _start_and_wait_for_first_epoch(tmp_path)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    stopped = load_run(run_dir, require_complete=False)
    k = stopped.manifest["epochs_done"]
    assert stopped.status == "interrupted" and stopped.manifest["interrupted_by"] == sig.name
    assert rows_at_signal <= k < EPOCHS  # stopped at an epoch boundary, before the end
    assert _history_rows(run_dir) == k
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as ck:
        assert int(ck["epochs_done"]) == k
    assert err.strip().splitlines()[-1] == (
        f"Interrupted: {sig.name} received: stopped after epoch {k} of {EPOCHS}; the checkpoint "
        f"is saved. Continue with `mnistlab train --resume {run_dir}`"
    )
    assert not (run_dir / "model.keras").exists()
    _resume_and_compare(run_dir, reference, resumed_from=k)


def test_sigkill_loses_at_most_the_current_epoch(tmp_path, reference):
    proc, run_dir, rows_at_signal = _start_and_wait_for_first_epoch(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    killed = load_run(run_dir, require_complete=False)
    # Nobody could record the kill: the manifest still says running, with a pid that is dead; but
    # the run's lock died with the process, so the status shown is "interrupted".
    assert killed.manifest["status"] == "running" and killed.manifest["pid"] == proc.pid
    assert not _alive(proc.pid)
    assert killed.status == "interrupted"
    listing = CliRunner().invoke(cli, ["runs", str(tmp_path)])
    assert listing.exit_code == 0
    (row,) = [line for line in listing.output.splitlines() if run_dir.name in line]
    assert " interrupted " in row and " running " not in row
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as ck:
        saved = int(ck["epochs_done"])
    # checkpoint.npz is written before history.csv, each atomically: every epoch recorded in
    # history.csv is in the checkpoint, and the checkpoint holds the last finished epoch at least
    # up to the one that was being written when the process died.
    rows_after = _history_rows(run_dir)
    assert rows_at_signal <= rows_after <= saved <= rows_after + 1
    # A SIGKILL can leave a hidden temporary file of the write it interrupted; never a partial
    # artifact. Resuming overwrites every artifact atomically.
    _resume_and_compare_allow_leftover(run_dir, reference, saved)


def _resume_and_compare_allow_leftover(run_dir, reference, saved):
    for name in temp_leftovers(run_dir):
        assert name.startswith((".checkpoint.npz.", ".history.csv.", ".manifest.json.")), name
    _resume_and_compare(run_dir, reference, resumed_from=saved)  # which checks they are gone


def test_second_sigint_stops_at_once_and_still_resumes(tmp_path, reference):
    """Ctrl-C twice: the second one interrupts the epoch in progress; the last checkpoint is used."""
    proc, run_dir, _ = _start_and_wait_for_first_epoch(tmp_path)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)  # back to back: no wall-clock gap to be early or late for
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Interrupted" in err
    stopped = load_run(run_dir, require_complete=False)
    # Wherever the second signal lands (mid-epoch, or while the manifest is being rewritten, which
    # is then abandoned atomically), the process is gone and so is its lock: "interrupted".
    assert stopped.status == "interrupted"
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as ck:
        saved = int(ck["epochs_done"])
    _resume_and_compare_allow_leftover(run_dir, reference, saved)
