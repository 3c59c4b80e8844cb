"""Several processes on one study: worker processes on SQLite, two commands on PostgreSQL."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import optuna
import pytest
from optuna.trial import TrialState

from mnistlab.tune.storage import open_storage, opened
from mnistlab.tune.study import tune

from .conftest import cli, cli_env


def _check_no_lost_or_duplicated(trials, expected: int | None = None):
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(numbers))), numbers  # unique and without gaps
    if expected is not None:
        assert len(numbers) == expected
    assert all(t.state != TrialState.RUNNING for t in trials)
    for t in trials:  # every finished trial kept what it reported
        if t.state == TrialState.COMPLETE:
            assert t.value == t.intermediate_values[max(t.intermediate_values)]


@pytest.mark.slow  # about 20 s on an idle 2-core machine, minutes when it is busy
def test_two_worker_processes_share_one_sqlite_file(tmp_path, base, space_file):
    events = []
    result = tune(base, space=space_file, trials=8, workers=2, out=tmp_path, study="w",
                  retrain=False, progress=events.append)
    assert result.summary["workers"] == 2 and result.summary["threads_per_worker"] >= 1
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{result.folder / 'study.db'}")
    trials = study.get_trials()
    _check_no_lost_or_duplicated(trials, expected=8)
    assert sorted(e["number"] for e in events if e["kind"] == "trial") == list(range(8))
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes took trials


def _hammer(url: str, trials: int) -> None:
    """A worker process that does nothing but storage traffic, as fast as it can."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="h", storage=open_storage(url),
                              pruner=optuna.pruners.MedianPruner(0, 0))

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for step in range(5):
            trial.report(x * step, step)
            if trial.should_prune():
                raise optuna.TrialPruned
        return x * 4

    study.optimize(objective, n_trials=trials)


@pytest.mark.slow
def test_sqlite_under_heavy_concurrent_writes(tmp_path):
    # Four processes with no training between storage writes: far more contention than real
    # trials make. With the busy timeout no write fails and no trial is lost or duplicated.
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'h.db'}"
    optuna.create_study(study_name="h", storage=open_storage(url))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(url, 30)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    trials = optuna.load_study(study_name="h", storage=url).get_trials()
    _check_no_lost_or_duplicated(trials, expected=120)
    assert not [t for t in trials if t.state == TrialState.FAIL]


# --------------------------------------------------------------------------- PostgreSQL
def _pg_bin() -> str | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL server on 127.0.0.1 (Debian's postgresql package); its URL."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    folder = tempfile.mkdtemp(prefix="mnistlab-pg-")
    data, port = os.path.join(folder, "data"), _free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        if user is None:
            pytest.skip("running as root and no 'postgres' or 'nobody' user for initdb")
        os.chmod(folder, 0o755)
        shutil.chown(folder, user)
        prefix = ["runuser", "-u", user, "--"]
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True,  # noqa: E731
                                      timeout=120, cwd=folder)
    run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(folder, "log"), "-w", "-t", "60",
        "-o", f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.mark.slow  # about 20 s on an idle 2-core machine, minutes when it is busy
def test_two_commands_share_a_study_on_postgresql(tmp_path, space_file, postgres):
    # Like two machines: separate run folders, one database.
    args = ["tune", "--dataset", "digits", "--space", str(space_file), "--trials", "10",
            "--storage", postgres, "--study", "shared", "--no-retrain"]
    procs = [subprocess.Popen(cli(*args, "--out", str(tmp_path / f"machine{i}")), env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with opened(postgres) as storage:
        trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    # Each command stops starting trials once the study holds 10; a trial the other command
    # started at that moment may finish as the 11th.
    assert 10 <= len(trials) <= 11
    _check_no_lost_or_duplicated(trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    for i in range(2):
        assert (tmp_path / f"machine{i}" / "tune-shared" / "trials.csv").is_file()
        assert "postgresql://postgres@127.0.0.1" in (
            tmp_path / f"machine{i}" / "tune-shared" / "tune.json").read_text()


@pytest.mark.slow  # about 20 s on an idle 2-core machine, minutes when it is busy
def test_sigterm_stops_after_the_trial_and_the_same_command_continues(tmp_path, space_file):
    args = ["tune", "--dataset", "digits", "--space", str(space_file), "--trials", "40",
            "--study", "sig", "--out", str(tmp_path), "--no-retrain"]
    proc = subprocess.Popen(cli(*args), env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Trial 0 "):
            proc.terminate()
            break
    rest = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, "".join(lines) + rest
    assert "run the same command again" in rest
    url = f"sqlite:///{tmp_path / 'tune-sig' / 'study.db'}"
    trials = optuna.load_study(study_name="sig", storage=url).get_trials()
    assert 1 <= len(trials) < 40  # stopped early, after the trial in progress
    _check_no_lost_or_duplicated(trials)
    assert not [t for t in trials if t.state == TrialState.FAIL]  # nothing cut short
    assert (tmp_path / "tune-sig" / "trials.csv").read_text().count("\n") == len(trials) + 1

    target = len(trials) + 2
    done = subprocess.run(cli(*[a if a != "40" else str(target) for a in args]), env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    again = optuna.load_study(study_name="sig", storage=url).get_trials()
    _check_no_lost_or_duplicated(again, expected=target)
    assert f"Trial {target - 1} " in done.stdout and "Trial 0 " not in done.stdout


def test_timeout_starts_no_new_trial(tmp_path, base, space_file):
    result = tune(base, space=space_file, trials=None, timeout=0.0, out=tmp_path, study="t",
                  retrain=False)
    assert result.ran == 0 and result.summary["trials"] == {}
