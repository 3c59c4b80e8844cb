"""Runs started at the same moment never share a run directory."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading

from reliability_helpers import ENV, MNISTLAB

from mnistlab.runs import create_run_dir, load_run
from mnistlab.training import compare_weights

NAME = re.compile(r"\d{8}-\d{6}-tutorial-digits-seed111(-\d+)?")


def test_threads_creating_run_dirs_at_once_get_distinct_dirs(tmp_path):
    n_threads, per_thread = 8, 25
    barrier = threading.Barrier(n_threads)
    made: list = []
    errors: list = []

    def worker():
        try:
            barrier.wait()
            for _ in range(per_thread):
                made.append(create_run_dir(tmp_path, "tutorial", "digits", 111))
        except Exception as e:  # reported below; a thread cannot fail the test by itself
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(made) == len(set(made)) == n_threads * per_thread
    assert all(p.is_dir() and NAME.fullmatch(p.name) for p in made)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in made)


_CREATE = textwrap.dedent("""
    import datetime as dt, sys
    from mnistlab.runs import create_run_dir
    print("READY", flush=True)
    sys.stdin.readline()  # the start signal: every process is waiting here before any proceeds
    stamp = dt.datetime(2026, 11, 30, 4, 0, 0)  # the same second for all, whatever the clock says
    print(create_run_dir(sys.argv[1], "tutorial", "digits", 111, now=stamp).name, flush=True)
""")


def test_processes_creating_a_run_dir_in_the_same_second(tmp_path):
    """Six processes, all started and waiting, are released together and each creates a run
    directory stamped with the same second: six distinct directories numbered '', -2 ... -6."""
    n = 6
    procs = [subprocess.Popen([sys.executable, "-c", _CREATE, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for p in procs:  # synchronisation point: each has imported mnistlab and is waiting
        assert p.stdout.readline().strip() == "READY"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    names = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        names.append(out.strip())
    assert len(set(names)) == n and all(NAME.fullmatch(x) for x in names)
    assert {x[:15] for x in names} == {"20261130-040000"}
    suffixes = sorted(int(x.rsplit("-", 1)[1]) if x.count("-") == 5 else 1 for x in names)
    assert suffixes == list(range(1, n + 1))


def test_two_train_commands_started_together(tmp_path):
    """Two real `mnistlab train` processes with the same preset and seed, started back to back,
    into the same folder: two run directories, each complete, each recording its own process."""
    args = [MNISTLAB, "train", "--dataset", "digits", "--epochs", "2", "--no-report", "--quiet",
            "--out", str(tmp_path)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=ENV) for _ in range(2)]
    dirs = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
        dirs.append(re.search(r"Run directory: (.+)", out).group(1).strip())
    assert dirs[0] != dirs[1]
    runs = [load_run(d) for d in dirs]
    assert sorted(r.path.name for r in runs) == sorted(p.name for p in tmp_path.iterdir())
    assert {r.manifest["pid"] for r in runs} == {p.pid for p in procs}
    for r in runs:
        assert [h["epoch"] for h in r.history] == [1, 2]
        assert json.loads((r.path / "manifest.json").read_text())["status"] == "complete"
    # Same seed, same data: neither clobbered the other, so both hold the same weights.
    assert compare_weights(runs[0].load_model(), runs[1].load_model())
