"""Multi-process training: two real processes on 127.0.0.1, JAX's CPU collectives (gloo).

Every job test starts real ``mnistlab train`` processes and bounds each wait; none asserts a time.
They are marked slow (about 20-40 s each on an idle 2-core machine): CI runs them.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnistlab.cluster import job_from
from mnistlab.distribution import local_rows
from mnistlab.errors import ConfigError

EPOCHS = 8
COMMON = ["train", "--dataset", "digits", "--epochs", str(EPOCHS), "--no-report", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, env_extra=None) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _STARTED.append(proc)
    return proc


def _job(tmp_path: Path, extra=(), extra1=(), resume=None):
    """Start processes 0 and 1 of one job; process i writes into tmp_path/out<i>."""
    port = _free_port()
    procs = []
    for i, more in ((0, extra), (1, extra1)):
        args = ["train", "--resume", str(resume)] if resume else [*COMMON, "--out", str(tmp_path / f"out{i}")]
        procs.append(_start([*args, *more, "--coordinator", f"127.0.0.1:{port}",
                             "--num-processes", "2", "--process-id", str(i)]))
    return procs


def _finish(procs, timeout=240):
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)]


def _weights(run_dir: Path) -> list[np.ndarray]:
    import keras

    model = keras.models.load_model(run_dir / "model.keras")
    return model.get_weights()


@pytest.fixture(autouse=True)
def _no_leftovers():
    """Whatever a test started is ended with it, whatever the outcome."""
    yield
    for p in _STARTED:
        if p.poll() is None:
            for child in _children(p.pid):
                os.kill(child, signal.SIGKILL)
            p.kill()
        p.communicate()
    _STARTED.clear()


_STARTED: list[subprocess.Popen] = []


def _only_run(folder: Path) -> Path:
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def single_two_devices(tmp_path_factory) -> Path:
    """The reference: one process, 2 virtual CPU devices, same seed and config."""
    out = tmp_path_factory.mktemp("single")
    proc = _start([*COMMON, "--devices", "2", "--out", str(out)],
                  {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    o, e = proc.communicate(timeout=240)
    assert proc.returncode == 0, e
    return _only_run(out)


def test_job_spec_from_flags_and_environment():
    spec = job_from("127.0.0.1:4321", 2, 1, environ={})
    assert (spec.coordinator, spec.num_processes, spec.process_id) == ("127.0.0.1:4321", 2, 1)
    env = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:2345",
           "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "0"}
    spec = job_from(environ=env)
    assert spec.coordinator == "10.0.0.1:1234" and spec.writes_files
    assert job_from(process_id=1, environ=env).process_id == 1  # a flag wins over the variable
    assert job_from("h:1", 1, 0, environ={}) is None  # one process: no job
    for bad, words in [(("h:1", 2, None), "missing: --process-id"),
                       (("nohost", 2, 0), "HOST:PORT"), (("h:99999", 2, 0), "HOST:PORT"),
                       (("h:1", 2, 2), "between 0 and 1"), (("h:1", 0, 0), "at least 1")]:
        with pytest.raises(ConfigError, match=words):
            job_from(*bad, environ={})
    with pytest.raises(ConfigError, match="whole number"):
        job_from(environ={**env, "KERAS_DISTRIBUTION_PROCESS_ID": "one"})


def test_a_breakdown_names_the_lost_processes_even_when_the_runtime_does_not():
    from mnistlab.cluster import JobSpec, _breakdown

    text = ["F0000 some runtime abort the parser does not know\n"]
    survivor = _breakdown(text, JobSpec("127.0.0.1:1234", 2, 0))
    assert "process(es) 1 stopped answering" in survivor and "--resume" in survivor
    assert "one or more" in _breakdown(text, JobSpec("127.0.0.1:1234", 3, 0))
    peer = _breakdown(text, JobSpec("127.0.0.1:1234", 2, 1))
    assert "coordinator at 127.0.0.1:1234 went away" in peer


def test_local_rows_split_every_global_batch_in_order():
    n, batch = 20, 8  # batches [0,8) [8,16) [16,20)
    parts = [local_rows(n, batch, 2, p) for p in (0, 1)]
    assert parts[0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17]
    assert parts[1].tolist() == [4, 5, 6, 7, 12, 13, 14, 15, 18, 19]


@pytest.mark.slow
def test_two_processes_train_like_two_devices_and_only_process_0_writes(
        tmp_path, single_two_devices):
    results = _finish(_job(tmp_path))
    for code, _out, err in results:
        assert code == 0, err
    assert "process 0 wrote the run directory" in results[1][1]
    assert not (tmp_path / "out1").exists()  # process 1 wrote nothing where it was told to
    run = _only_run(tmp_path / "out0")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["processes"] == 2
    assert len(manifest["devices"]) == 2 and manifest["job"]["num_processes"] == 2
    reference = _weights(single_two_devices)
    got = _weights(run)
    assert len(got) == len(reference)
    for a, b in zip(got, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_mismatched_configs_are_refused(tmp_path):
    results = _finish(_job(tmp_path, extra1=("--seed", "5")), timeout=180)
    for code, _, err in results:
        assert code == 1
        assert "do not share one configuration" in err and "Traceback" not in err
    assert not any((tmp_path / "out0").glob("*/model.keras"))


@pytest.mark.slow
def test_a_killed_peer_stops_the_survivor_with_a_clear_error(tmp_path):
    procs = _job(tmp_path, extra=("--epochs", "10000"), extra1=("--epochs", "10000"))
    history = tmp_path / "out0"
    deadline = time.monotonic() + 180
    while not list(history.glob("*/history.csv")):  # the job is training (sync point)
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].stderr.read()
        time.sleep(0.2)
    for child in _children(procs[1].pid):
        os.kill(child, signal.SIGKILL)
    code, _, err = _finish(procs[:1], timeout=90)[0]
    procs[1].communicate(timeout=30)
    assert code == 1, err
    assert "stopped answering" in err and "process(es) 1" in err and "Traceback" not in err
    assert "--resume" in err


@pytest.mark.slow
def test_resume_when_all_processes_start_again(tmp_path, single_two_devices):
    procs = _job(tmp_path)
    deadline = time.monotonic() + 180
    while not list((tmp_path / "out0").glob("*/history.csv")):
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].stderr.read()
        time.sleep(0.1)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    _finish(procs)
    run = _only_run(tmp_path / "out0")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] != "complete" and manifest["epochs_done"] < EPOCHS
    results = _finish(_job(tmp_path, resume=run))
    for code, _, err in results:
        assert code == 0, err
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    for a, b in zip(_weights(run), _weights(single_two_devices), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
def test_a_convnet_trains_in_a_job_the_same_way(tmp_path):
    cnn = ["--preset", "cnn", "--set",
           'model.conv=[{filters=4, padding="same"}, {filters=8, padding="same"}]', "--epochs", "2"]
    results = _finish(_job(tmp_path, extra=cnn, extra1=cnn))
    for code, _out, err in results:
        assert code == 0, err
    assert not (tmp_path / "out1").exists()
    run = _only_run(tmp_path / "out0")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["processes"] == 2
    assert "Conv2D" in (run / "architecture.json").read_text()
