"""Absurd values, unknown keys and wrong types: one clear ``Error:`` line before anything runs.

Every case goes through the real CLI (in-process) with ``--dataset digits``, so a value that got
through would start training; each must stop at the configuration with exit code 1 (2 for click's
own type checks), no traceback, and no run directory.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mnistlab.cli import cli
from mnistlab.config import load_config
from mnistlab.errors import ConfigError

CASES = [
    # absurd sizes and counts
    (["--epochs", "0"], "train.epochs: Input should be greater than or equal to 1 (received 0)"),
    (["--epochs", "-3"], "train.epochs: Input should be greater than or equal to 1 (received -3)"),
    (["--epochs", "1000000000"], "train.epochs: Input should be less than or equal to 10000"),
    (["--set", "train.epochs=1e9"], "train.epochs: Input should be a valid integer (received 1000000000.0)"),
    (["--batch-size", "0"], "train.batch_size: Input should be greater than or equal to 1"),
    (["--batch-size", "-32"], "train.batch_size: Input should be greater than or equal to 1"),
    (["--set", "train.batch_size=10000000000"], "train.batch_size: Input should be less than or equal to 1000000"),
    (["--set", "model.hidden=[0]"], "hidden layer sizes must be between 1 and 65536; received [0]"),
    (["--set", "model.hidden=[100, -1, 32]"], "received [-1]"),
    (["--set", "model.hidden=[1000000000]"], "received [1000000000]"),
    (["--set", "model.hidden=[]"], "an mlp needs at least one hidden layer"),
    (["--set", f"model.hidden={[8] * 17}"], "model.hidden: List should have at most 16 items"),
    (["--set", "train.learning_rate=0"], "train.learning_rate: Input should be greater than 0"),
    (["--set", "train.learning_rate=-0.01"], "train.learning_rate: Input should be greater than 0"),
    (["--set", "train.learning_rate=nan"], "train.learning_rate: Input should be"),
    (["--set", "train.learning_rate=inf"], "train.learning_rate: Input should be less than or equal to 10"),
    (["--set", "model.dropout=1.0"], "model.dropout: Input should be less than 1"),
    (["--set", "model.dropout=-0.1"], "model.dropout: Input should be greater than or equal to 0"),
    (["--set", "train.momentum=1"], "train.momentum: Input should be less than 1"),
    (["--set", "train.early_stopping=-1"], "train.early_stopping: Input should be greater than or equal to 0"),
    (["--seed", "-1"], "seed: Input should be greater than or equal to 0 (received -1)"),
    (["--set", "seed=99999999999"], "seed: Input should be less than or equal to 2147483647"),
    (["--set", "data.val_fraction=0"], "data.val_fraction: Input should be greater than 0"),
    (["--set", "data.val_fraction=1"], "data.val_fraction: Input should be less than 1"),
    # values outside a choice
    (["--set", "train.optimizer=adagrad"], "'sgd', 'adam' or 'rmsprop'"),
    (["--set", "model.activation=lambda"], "model.activation: Input should be"),
    (["--set", "train.monitor=loss"], "'val_loss' or 'val_accuracy'"),
    (["--preset", "turbo"], "unknown preset 'turbo'. Valid presets: tutorial, quick, adam"),
    # unknown keys
    (["--set", "train.lr=0.1"], "unknown key 'train.lr' in --set. Valid keys: "),
    (["--set", "foo=1"], "unknown key 'foo' in --set"),
    (["--set", "model.hidden.0=5"], "unknown key 'model.hidden.0' in --set"),
    (["--set", "=3"], "unknown key '' in --set"),
    (["--set", "train.epochs"], "--set expects key=value, e.g. train.epochs=3; received 'train.epochs'"),
    # wrong types
    (["--set", "train.epochs=[1, 2]"], "train.epochs: Input should be a valid integer"),
    (["--set", "train.epochs=ten"], "train.epochs: Input should be a valid integer"),
    (["--set", "train.epochs=2.5"], "train.epochs: Input should be a valid integer (received 2.5)"),
    (["--set", "train.shuffle=maybe"], "train.shuffle: Input should be a valid boolean"),
    (["--set", "model.hidden=big"], "model.hidden: Input should be a valid list"),
    (["--set", "data.mirrors=http://example.org"], "data.mirrors: Input should be a valid list"),
    (["--set", "model={hidden = [1]}"], "unknown key 'model' in --set"),
]


def _run(tmp_path, args):
    out = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["train", "--dataset", "digits", "--no-report", *args,
                                   "--out", str(out)])
    return res, out


@pytest.mark.parametrize("args, fragment", CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_cli_config_is_one_clean_error(tmp_path, args, fragment):
    res, out = _run(tmp_path, args)
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and fragment in res.output, res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output
    assert not out.exists()


@pytest.mark.parametrize("args", [["--epochs", "many"], ["--seed", "1.5"], ["--batch-size", ""]])
def test_flag_types_are_checked_by_click(tmp_path, args):
    res, out = _run(tmp_path, args)
    assert res.exit_code == 2 and "Invalid value" in res.output and not out.exists()


TOML_CASES = [
    ('[train]\nepochs = "ten"\n', "train.epochs: Input should be a valid integer"),
    ("[train]\nbatch_size = 3.5\n", "train.batch_size: Input should be a valid integer"),
    ('[model]\nhidden = "big"\n', "model.hidden: Input should be a valid list"),
    ("[model]\nhidden = [[1]]\n", "model.hidden.0: Input should be a valid integer"),
    ("[model]\nhidden = [0, 10]\n", "hidden layer sizes must be between 1 and 65536; received [0]"),
    ("train = 5\n", "train: Input should be a valid dictionary"),
    ('seed = "abc"\n', "seed: Input should be a valid integer"),
    ("[train]\nepochs = 1000000000\n", "train.epochs: Input should be less than or equal to 10000"),
    ("[optimizer]\nname = 'adam'\n", "unknown key 'optimizer'. Valid keys: "),
    ("[train]\nepochz = 3\n", "unknown key 'train.epochz'. Valid keys: "),
    ("[train]\nepochs = 3\nepochs = 4\n", "is not valid TOML"),
    ("[train\n", "is not valid TOML"),
    ("preset = 42\n", "unknown preset 42"),
]


@pytest.mark.parametrize("text, fragment", TOML_CASES)
def test_bad_toml_file_is_one_clean_error(tmp_path, text, fragment):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    res, out = _run(tmp_path, ["--config", str(f)])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and fragment in res.output, res.output
    assert "Traceback" not in res.output and not out.exists()


def test_binary_or_missing_config_file(tmp_path):
    f = tmp_path / "bin.toml"
    f.write_bytes(b"\xff\xfe\x00garbage")
    res, out = _run(tmp_path, ["--config", str(f)])
    assert res.exit_code == 1 and "is not valid TOML" in res.output and not out.exists()
    res, out = _run(tmp_path, ["--config", str(tmp_path / "nope.toml")])
    assert res.exit_code == 1 and "config file not found" in res.output and not out.exists()


def test_unknown_dataset_stops_before_a_run_dir(tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["train", "--dataset", "no_such_data", "--out", str(out)])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "no_such_data" in res.output
    assert not out.exists()


# Found by these tests: pydantic's lax mode turned booleans into numbers, and `--set preset=...`
# renamed the preset without applying it.
@pytest.mark.parametrize("override", ["train.epochs=true", "train.learning_rate=true"])
def test_booleans_are_not_numbers(override):
    with pytest.raises(ConfigError):
        load_config(overrides=[override])


def test_set_preset_applies_the_preset_or_is_refused():
    try:
        cfg = load_config(overrides=["preset=adam"])
    except ConfigError:
        return
    assert cfg.train.optimizer == "adam"
