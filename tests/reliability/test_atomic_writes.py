"""A crash while writing never leaves a half-written artifact and never destroys the good one.

Writers that fail half-way (an exception, Ctrl-C, a real Keras save followed by an I/O error) and
a real process SIGKILLed in the middle of writing a big file.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from reliability_helpers import temp_leftovers

from mnistlab import files
from mnistlab.files import DiskFullError, atomic_path, save_npz, save_with, write_json, write_text


def _tiny_model():
    import keras

    inp = keras.Input(shape=(8, 8))
    x = keras.layers.Flatten()(inp)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("exc", [Boom("writer failed"), KeyboardInterrupt(), OSError(errno.EIO, "I/O error")])
def test_writer_failing_half_way_keeps_the_old_file(tmp_path, exc):
    target = tmp_path / "metrics.json"
    write_json(target, {"test_accuracy": 0.9})
    before = target.read_bytes()
    with pytest.raises(type(exc)), atomic_path(target) as tmp:
        tmp.write_bytes(b'{"test_accuracy": 0.')  # half of a new file
        raise exc
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]


def test_enospc_from_the_writer_becomes_disk_full_error(tmp_path):
    target = tmp_path / "report.html"
    write_text(target, "<p>old</p>")

    def writer(p):
        p.write_text("<p>new, but the disk")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=r"no space left on the device while writing .*report\.html"):
        save_with(target, writer)
    assert target.read_text() == "<p>old</p>"
    assert os.listdir(tmp_path) == ["report.html"]


def test_unserialisable_json_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_real_keras_save_then_failure_keeps_the_previous_model(tmp_path, suffix):
    """The new model is completely written to the temporary file, then the step fails: the old
    model file must be untouched and the temporary one gone."""
    model = _tiny_model()
    target = tmp_path / f"model{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_with(target, model.save, suffix=suffix)
        before = target.read_bytes()

        def save_then_fail(p):
            model.save(p)
            assert p.stat().st_size > 0
            raise OSError(errno.EIO, "I/O error after writing")

        with pytest.raises(OSError, match="I/O error"):
            save_with(target, save_then_fail, suffix=suffix)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == [target.name]


def test_npz_writer_failing_keeps_the_checkpoint(tmp_path):
    target = tmp_path / "checkpoint.npz"
    save_npz(target, w=np.arange(10.0))
    before = target.read_bytes()
    with pytest.raises(ValueError):
        save_npz(target, w=np.arange(10.0), bad=np.zeros((2, 2)).reshape(5, -1))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["checkpoint.npz"]


def test_npz_members_may_wait_for_their_arrays(tmp_path):
    from concurrent.futures import Future

    later = Future()
    later.set_result(np.arange(6, dtype=np.float32).reshape(2, 3))
    images = np.zeros((100, 28, 28), np.uint8)
    save_npz(tmp_path / "p.npz", images=images, probabilities=later)
    with np.load(tmp_path / "p.npz") as f:
        assert list(f.keys()) == ["images", "probabilities"]
        np.testing.assert_array_equal(f["images"], images)
        np.testing.assert_array_equal(f["probabilities"], later.result())
    assert (tmp_path / "p.npz").stat().st_size < images.nbytes // 10  # deflated


def test_npz_array_that_never_comes_keeps_the_old_file(tmp_path):
    from concurrent.futures import Future

    target = tmp_path / "predictions.npz"
    save_npz(target, w=np.arange(10.0))
    before = target.read_bytes()
    failed = Future()
    failed.set_exception(RuntimeError("the evaluation did not finish"))
    with pytest.raises(RuntimeError, match="did not finish"):
        save_npz(target, images=np.zeros((50, 28, 28), np.uint8), probabilities=failed)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["predictions.npz"]


def test_written_files_get_the_usual_permissions(tmp_path):
    """An atomic write must not change who can read an artifact: a plain ``open(..., "w")`` gives
    0o666 minus the umask, so must we (tempfile.mkstemp alone would give 0o600)."""
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        save_npz(tmp_path / "b.npz", a=np.zeros(2))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


_PAUSING = textwrap.dedent("""
    import os, sys
    from mnistlab.files import save_with, write_json
    target, size, point = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def pause(name):  # the synchronisation point: say where we are, then wait to be killed
        if name == point:
            print("AT", name, flush=True)
            sys.stdin.readline()

    real_replace, real_fsync = os.replace, os.fsync
    def replace(a, b):
        pause("before-rename:" + os.path.basename(b))
        real_replace(a, b)
        pause("after-rename:" + os.path.basename(b))
    def fsync(fd):
        pause("before-fsync")
        real_fsync(fd)

    def big(version):
        def writer(p):
            with open(p, "wb") as f:
                f.write(bytes([version]) * (size // 2))
                f.flush()
                pause("mid-data" if version else "")
                f.write(bytes([version]) * (size - size // 2))
        return writer

    save_with(target + "/big.bin", big(0))  # version 0, complete, before any pause is armed
    write_json(target + "/metrics.json", {"i": 0, "pad": "x" * (size // 8)})
    os.replace, os.fsync = replace, fsync
    save_with(target + "/big.bin", big(1))
    write_json(target + "/metrics.json", {"i": 1, "pad": "x" * (size // 8)})
    print("AT end", flush=True)
    sys.stdin.readline()
""")

# Where the writer is killed, the version each file must then hold, and the temporaries left.
_POINTS = [
    ("mid-data", 0, 0, [".big.bin."]),
    ("before-fsync", 0, 0, [".big.bin."]),
    ("before-rename:big.bin", 0, 0, [".big.bin."]),
    ("after-rename:big.bin", 1, 0, []),
    ("before-rename:metrics.json", 1, 0, [".metrics.json."]),
    ("after-rename:metrics.json", 1, 1, []),
]


_HALF = textwrap.dedent("""
    import sys, time
    from mnistlab.files import save_with
    def writer(p):
        with open(p, "wb") as f:
            f.write(b"N" * 1_000_000)
            f.flush()
            print("HALF", p, flush=True)
            time.sleep(60)
    save_with(sys.argv[1] + "/model.keras", writer)
""")


def test_sigkill_in_the_middle_of_a_write_keeps_the_old_file(tmp_path):
    """Deterministic: the child has written half of the new file when it is killed."""
    target = tmp_path / "model.keras"
    target.write_bytes(b"OLD" * 1000)
    proc = subprocess.Popen([sys.executable, "-c", _HALF, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert line.startswith("HALF"), line
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    assert target.read_bytes() == b"OLD" * 1000
    # What SIGKILL cannot clean up: the hidden, half-written temporary file (never read by mnistlab).
    assert temp_leftovers(tmp_path) == [line.split()[1].rsplit("/", 1)[1]]


@pytest.mark.parametrize("point, big_version, json_version, left", _POINTS,
                         ids=[p[0] for p in _POINTS])
def test_sigkill_at_each_step_of_a_write_never_leaves_a_partial_file(tmp_path, point, big_version,
                                                                     json_version, left):
    """A process rewrites an 8 MiB file and a JSON file; it is killed at a named step of the
    atomic write (the child stops there and says so, so the kill lands exactly there): each file
    then holds one complete version, the old one until the rename, and the only leftover is the
    hidden temporary file of the write that was cut short."""
    size = 8 << 20
    proc = subprocess.Popen([sys.executable, "-c", _PAUSING, str(tmp_path), str(size), point],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == f"AT {point}"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    proc.stdin.close()
    data = (tmp_path / "big.bin").read_bytes()
    assert len(data) == size and data.count(bytes([big_version])) == size
    assert json.loads((tmp_path / "metrics.json").read_text())["i"] == json_version
    leftovers = temp_leftovers(tmp_path)
    assert [name[:len(prefix)] for name, prefix in zip(leftovers, left, strict=True)] == left


def test_disk_full_error_is_an_oserror_and_a_mnistlab_error():
    from mnistlab.errors import MnistlabError

    assert issubclass(files.DiskFullError, MnistlabError) and issubclass(files.DiskFullError, OSError)
