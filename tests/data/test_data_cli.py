"""``mnistlab data list|info|fetch``: in-process with CliRunner, plus one real subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from datafiles import tiny_arrays

from mnistlab.cli import cli

WAYS_OUT = ("MNISTLAB_MIRRORS", "data.mirrors", "--data PATH")


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.mark.parametrize("sub", [[], ["list"], ["info"], ["fetch"]])
def test_help(sub):
    result = run("data", *sub, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_info_digits():
    result = run("data", "info", "digits")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "x_train: (1437, 8, 8) uint8" in out and "x_test:  (360, 8, 8) uint8" in out
    assert "after a 30% validation split" in out and "class counts" in out
    assert "source:  sklearn.datasets.load_digits" in out and "no official test split" in out


def test_info_custom_npz(tmp_path):
    x_train, y_train, x_test, y_test = tiny_arrays()
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    result = run("data", "info", "--data", str(path))
    assert result.exit_code == 0, result.output
    assert "x_train: (20, 5, 4)" in result.output and "sha256 mine.npz:" in result.output


def test_info_mnist_offline_is_one_clean_error(tmp_path):
    result = run("data", "info", "mnist", env={"KERAS_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert result.output.startswith("Error: could not download mnist.npz")
    assert str(tmp_path / "datasets" / "mnist.npz") in result.output
    assert all(way in result.output for way in WAYS_OUT)
    assert "Traceback" not in result.output


def test_train_offline_offers_the_datasets_that_are_here_now(tmp_path):
    from mnistlab.data.sources import availability

    result = run("train", "--dataset", "mnist", "--out", str(tmp_path / "runs"),
                 env={"KERAS_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert result.output.startswith("Error: could not download mnist.npz")
    assert all(way in result.output for way in WAYS_OUT)
    here = [name for name in ("fashion_mnist", "digits", "mnist_sample") if availability(name)[0]]
    assert "digits" in here  # scikit-learn is a dependency: there is always a way out
    assert re.findall(r"--dataset (\w+) ", result.output) == here
    spare = "mnist_sample" if "mnist_sample" in here else here[0]
    assert result.output.rstrip().endswith(
        f"or add --fallback {spare}: it is used only when mnist cannot be had.")
    assert not (tmp_path / "runs").exists() and "Traceback" not in result.output


def test_fetch_tries_the_mirror_first(tmp_path, dead_url):
    result = run("data", "fetch", "mnist", "--mirror", dead_url + "/",
                 env={"KERAS_HOME": str(tmp_path)})
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[1].strip().startswith(f"- {dead_url}/mnist.npz")


def test_fetch_prints_path_and_sha256():
    result = run("data", "fetch", "digits")
    assert result.exit_code == 0
    path, word, digest = result.output.split()
    assert path.endswith("digits.csv.gz") and word == "sha256" and len(digest) == 64


def test_list_names_every_dataset(tmp_path):
    result = run("data", "list", env={"KERAS_HOME": str(tmp_path)})
    assert result.exit_code == 0
    for name in ("mnist", "fashion_mnist", "digits", "mnist_sample"):
        assert f"\n{name} " in "\n" + result.output
    assert "offline now: no (needs a download to" in result.output  # mnist, empty cache
    assert "offline now: yes (ships with scikit-learn)" in result.output


def test_usage_errors():
    assert run("data", "info").exit_code == 2
    assert run("data", "info", "digits", "--data", "x.npz").exit_code == 2
    bad = run("data", "info", "nope")
    assert bad.exit_code == 1 and "unknown dataset 'nope'" in bad.output


def test_real_subprocess_offline_mnist(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MNISTLAB_MIRRORS"}
    env["KERAS_HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "mnistlab", "data", "info", "mnist"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("Error: could not download mnist.npz")
    assert all(way in proc.stderr for way in WAYS_OUT) and "Traceback" not in proc.stderr


def test_progress_bar_only_on_a_terminal():
    import pty

    from mnistlab.cli.data import progress_bar

    assert progress_bar() is None  # pytest's stderr is not a TTY: the CLI stays silent
    code = ("from mnistlab.cli.data import progress_bar\n"
            "bar = progress_bar()\nbar('f.bin', 5, 10)\nbar('f.bin', 10, 10)\n"
            # no Content-Length: the size is known only with the last call
            "bar('g.bin', 0, None)\nbar('g.bin', 3_000_000, None)\nbar('g.bin', 3_000_000, 3_000_000)\n")
    main, sub = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", code], stderr=sub, stdout=subprocess.PIPE,
                              timeout=60)
        os.close(sub)
        sub = None
        chunks = []
        while True:
            try:
                data = os.read(main, 4096)
            except OSError:  # EIO once the terminal is drained
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(main)
        if sub is not None:
            os.close(sub)
    text = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert "f.bin [###############...............]  50%" in text
    assert "f.bin [" + "#" * 30 + "] 100%" in text
    assert "g.bin [" in text and "3.0 MB" in text
    assert text.endswith("\x1b[?25h\r\n")  # every bar finished: cursor back, line ended
