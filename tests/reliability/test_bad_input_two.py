"""Bad input, round two: each is one clean ``Error: …`` line, exit 1, never a traceback."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from mnistlab.cli import cli


def _error(args, expect: str, code: int = 1) -> str:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == code, (res.output, res.exception)
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), \
        repr(res.exception)
    assert "Traceback" not in res.output
    assert expect in res.output, res.output
    return res.output


def _save(path, outputs: int, input_shape=(8, 8), two_heads=False):
    import keras

    inp = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inp)
    out = keras.layers.Dense(outputs, activation="softmax")(x)
    model = keras.Model(inp, [out, keras.layers.Dense(10)(x)] if two_heads else out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return path


def test_model_with_too_few_outputs_is_a_clear_error(tmp_path):
    """5 outputs on 10-class data used to end in IndexError and a traceback."""
    path = _save(tmp_path / "five.keras", 5)
    _error(["evaluate", "--model", str(path), "--dataset", "digits"],
           "Error: the model gives outputs of shape (5,) but the data has 10 classes")


def test_model_with_two_outputs_or_the_wrong_input_is_a_clear_error(tmp_path):
    _error(["evaluate", "--model", str(_save(tmp_path / "two.keras", 10, two_heads=True)),
            "--dataset", "digits"], "1 input(s) and 2 output(s)")
    _error(["evaluate", "--model", str(_save(tmp_path / "big.keras", 10, (28, 28))),
            "--dataset", "digits"], "expects images of shape (28, 28) but the data has (8, 8)")


@pytest.mark.parametrize("where", ["toml_optimizer", "toml_dataset", "set_key", "set_value"])
def test_huge_values_are_shortened_in_errors(tmp_path, where):
    big = "x" * 10_000_000
    args = ["train", "--out", str(tmp_path / "runs")]
    if where.startswith("toml"):
        key = "optimizer" if where == "toml_optimizer" else "dataset"
        section = "train" if key == "optimizer" else "data"
        cfg = tmp_path / "big.toml"
        cfg.write_text(f'[{section}]\n{key} = "{big}"\n')
        args += ["--config", str(cfg)]
    elif where == "set_key":
        args += ["--set", f"{big}=1"]
    else:
        args += ["--set", f"train.optimizer={big}"]
    out = _error(args, "Error: ")
    assert len(out) < 3000, len(out)
    assert "10,000,0" in out  # the full length is said (10,000,000 characters, plus quotes)


@pytest.mark.parametrize("kind", ["proc", "file", "dev_null"])
def test_unusable_out_folder_is_a_clear_error(tmp_path, kind):
    target = {"proc": "/proc/mnistlab-x", "file": str(tmp_path / "afile"),
              "dev_null": "/dev/null/x"}[kind]
    (tmp_path / "afile").write_text("not a folder")
    out = _error(["train", "--dataset", "digits", "--epochs", "1", "--no-report", "--quiet",
                  "--out", target], f"Error: cannot create a run directory under --out {target}")
    assert "Pass --out a folder you can write to" in out
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.parametrize("path, expect", [
    ("x" * 5000, "cannot be used (File name too long)"),
    ("/dev/null", "neither a file nor a folder"),
    ("/dev/null/x", "no such file or folder"),
])
def test_unusable_data_paths_are_clear_errors(tmp_path, path, expect):
    out = _error(["train", "--data", path, "--out", str(tmp_path)], expect)
    assert len(out) < 1000


def test_npz_with_a_huge_declared_array_is_too_large_not_corrupt(tmp_path):
    """A header declaring 60000×130000 uint8 (7.8 GB, what an all-zero array compresses from)."""
    import io
    import zipfile

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False,
                                                "shape": (60000, 130000)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(f"{name}.npy", head.getvalue() + b"\0" * 64)
    out = _error(["train", "--data", str(path), "--out", str(tmp_path / "runs")], "too large")
    assert "corrupt" not in out and "7,800,000,000 bytes" in out


# Found while hunting: what a careless or hostile user can pass where a file is expected.
@pytest.mark.parametrize("kind, expect", [
    ("folder", "is a folder. Pass a .toml file"),
    ("device", "is not a regular file (a device or pipe?)"),  # /dev/zero used to be read forever
    ("huge", "is over 16,777,216 bytes"),
])
def test_config_that_is_not_a_small_regular_file(tmp_path, kind, expect):
    path = {"folder": str(tmp_path), "device": "/dev/zero", "huge": str(tmp_path / "big.toml")}[kind]
    if kind == "huge":
        with open(path, "wb") as f:
            f.truncate(17 << 20)  # sparse: nothing that size is written
    _error(["train", "--config", path, "--out", str(tmp_path / "runs")], f"Error: config file {path}")
    _error(["train", "--config", path, "--out", str(tmp_path / "runs")], expect)
    assert not (tmp_path / "runs").exists()


def test_show_folder_that_cannot_be_made(tmp_path):
    from PIL import Image

    model = _save(tmp_path / "m.keras", 10, (28, 28))
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "img.png")
    (tmp_path / "afile").write_text("x")
    for show, why in ((tmp_path / "afile", "it is an existing file"), ("/dev/null/x", "")):
        _error(["predict", "--model", str(model), str(tmp_path / "img.png"), "--show", str(show)],
               f"Error: cannot use --show {show}: {why}")
