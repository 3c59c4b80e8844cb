"""The CLI: help is cheap, every command is documented, errors are clean, one real end-to-end run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mnistlab.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _all_commands(group=cli, prefix=""):
    import click

    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        yield full, cmd
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, prefix=f"{full} ")


def test_every_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, _ in _all_commands() if f"mnistlab {name}" not in readme]
    assert not missing, f"commands not documented in README.md: {missing}"


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from mnistlab.cli import cli\n"
        "try:\n    cli(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "for name in list(cli.commands):\n"
        "    try:\n        cli([name, '--help'], standalone_mode=False)\n"
        "    except SystemExit:\n        pass\n"
        "heavy = [m for m in ('keras', 'jax', 'tensorflow', 'sklearn', 'matplotlib', 'fastapi')"
        " if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:", out.stdout


@pytest.mark.parametrize("name", ["--help"] + [n for n, _ in _all_commands()])
def test_every_command_has_help(name):
    args = name.split() if name != "--help" else []
    res = CliRunner().invoke(cli, [*args, "--help"])
    assert res.exit_code == 0 and "Usage:" in res.output


@pytest.mark.parametrize("command", ["train", "tune"])
def test_preset_help_names_every_preset(command):
    from mnistlab.config import PRESETS

    res = CliRunner().invoke(cli, [command, "--help"])
    text = " ".join(res.output.split())
    start = text.index("--preset")
    listed = text[start : text.index(" --", start + 1)]
    assert [p for p in PRESETS if p not in listed] == []


def test_usage_error_exit_code_2():
    res = CliRunner().invoke(cli, ["train", "--epochs", "many"])
    assert res.exit_code == 2 and "Invalid value" in res.output


def test_config_error_is_clean(tmp_path):
    res = CliRunner().invoke(cli, ["train", "--set", "train.epoch=3", "--out", str(tmp_path)])
    assert res.exit_code == 1
    assert res.output.startswith("Error: unknown key 'train.epoch'") and "Traceback" not in res.output
    assert not any(tmp_path.iterdir())


def test_missing_run_is_clean(tmp_path):
    res = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "Error: run directory not found" in res.output


def test_debug_shows_traceback(tmp_path):
    from mnistlab.errors import RunError

    res = CliRunner().invoke(cli, ["--debug", "evaluate", str(tmp_path / "nope")])
    assert isinstance(res.exception, RunError)


def test_end_to_end_real_cli(tmp_path):
    """The real console script: train 2 epochs on digits, then evaluate, list and rerun it."""
    exe = Path(sys.executable).parent / "mnistlab"
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run(
        [str(exe), "train", "--dataset", "digits", "--epochs", "2", "--out", str(tmp_path), "--no-report"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"Epoch 2/2 - .*val_accuracy: \d\.\d{4}", out.stdout)
    run = Path(re.search(r"Run directory: (.+)", out.stdout).group(1).strip())
    recorded = json.loads((run / "metrics.json").read_text())
    ev = subprocess.run([str(exe), "evaluate", str(run), "--json"], capture_output=True, text=True,
                        env=env, timeout=300)
    assert ev.returncode == 0, ev.stderr
    again = json.loads(ev.stdout)
    assert again["test_accuracy"] == recorded["test_accuracy"]
    assert again["test_loss"] == recorded["test_loss"]
    assert again["confusion_matrix"] == recorded["confusion_matrix"]
    # Exit code 1 after JAX loaded (--model loads Keras; the process ends without interpreter
    # teardown): the code and the whole table still arrive.
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    bad = subprocess.run([str(exe), "predict", str(tmp_path / "broken.png"), "--model",
                          str(run / "model.keras")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert bad.returncode == 1, bad.stderr
    assert "broken.png" in bad.stdout and "ERROR: " in bad.stdout
    # A missing file is a usage error, reported before any model is loaded.
    missing = subprocess.run([str(exe), "predict", str(run), str(tmp_path / "missing.png")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 1 and "Error: no such file or folder" in missing.stderr
    assert "missing.png" in missing.stderr
    ls = subprocess.run([str(exe), "runs", str(tmp_path)], capture_output=True, text=True, env=env)
    assert run.name in ls.stdout and "complete" in ls.stdout
    py = subprocess.run([sys.executable, "-m", "mnistlab", "--version"], capture_output=True, text=True)
    assert py.returncode == 0 and "mnistlab" in py.stdout


def test_train_falls_back_out_loud(tmp_path):
    from mnistlab.runs import list_runs

    res = CliRunner().invoke(cli, ["train", "--dataset", "no_such_data", "--fallback", "digits",
                                   "--epochs", "1", "--out", str(tmp_path), "--no-report", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "Cannot use dataset 'no_such_data': unknown dataset" in res.stderr
    assert "Falling back to 'digits' (asked for with --fallback)." in res.stderr
    (run,) = list_runs(tmp_path)
    assert run.is_complete and run.manifest["dataset"]["name"] == "digits"
    assert f"Run directory: {run.path}" in res.stdout
    assert "Report:" not in res.stdout  # --no-report: no line pointing at a page that is not there


def test_rerun_shows_progress_and_ends_with_the_report(digits_run, tmp_path):
    res = CliRunner().invoke(cli, ["rerun", str(digits_run.path), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert re.search(r"Epoch 1/2 - .*\nEpoch 2/2 - .*val_accuracy: \d\.\d{4}", res.stdout)
    new = Path(re.search(r"New run: (.+)", res.stdout).group(1).strip())
    assert new.parent == tmp_path and "Weights bit-identical: yes" in res.stdout
    # The recorded config has the report on (the fixture only skipped it): figures and page built.
    assert res.stdout.splitlines()[-1] == f"Report: {new / 'report.html'}"
    assert (new / "report.html").is_file() and (new / "curves.png").is_file()
    quiet = CliRunner().invoke(cli, ["rerun", str(digits_run.path), "--out", str(tmp_path),
                                     "--quiet", "--no-report"])
    assert quiet.exit_code == 0, quiet.output
    assert "Epoch" not in quiet.stdout and "Report:" not in quiet.stdout


def test_exit_after_jax_still_runs_atexit_handlers_and_keeps_the_code(tmp_path):
    """The console script skips interpreter teardown once JAX is loaded, but nothing else."""
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, sys, click\n"
        "from mnistlab.cli import cli, main\n"
        "@cli.command('probe')\n"
        "def probe():\n"
        "    import jax  # noqa: F401\n"
        f"    atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "    click.echo('unflushed output', nl=False)\n"
        "    sys.exit(3)\n"
        "sys.argv = ['mnistlab', 'probe']\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stderr
    assert out.stdout == "unflushed output" and marker.read_text() == "yes"


def test_runs_lists_model_optimizer_lr_and_stays_aligned(digits_run, tmp_path):
    """Three runs: the fixture's, a long-named cnn/adam one, and one whose config.toml is broken."""
    import shutil

    from mnistlab.config import load_config, to_toml

    plain = tmp_path / digits_run.path.name
    shutil.copytree(digits_run.path, plain)
    long = tmp_path / f"{digits_run.path.name}-{'a-very-long-label' * 4}"
    shutil.copytree(digits_run.path, long)
    (long / "config.toml").write_text(to_toml(load_config("cnn", data__dataset="digits")))
    broken = tmp_path / "zz-broken-config"
    shutil.copytree(digits_run.path, broken)
    (broken / "config.toml").write_text("[train\nepochs = ")
    res = CliRunner().invoke(cli, ["runs", str(tmp_path)])
    assert res.exit_code == 0, res.output
    header, *rows = res.output.splitlines()
    assert header.split() == ["run", "dataset", "preset", "model", "optimizer", "lr", "epochs",
                              "status", "test", "acc"]
    cells = {row.split()[0]: row.split() for row in rows}
    acc = f"{digits_run.metrics['test_accuracy']:.4f}"
    assert cells[plain.name][1:] == ["digits", digits_run.manifest["preset"], "mlp", "sgd", "0.01",
                                     "2", "complete", acc]
    assert cells[long.name][3:6] == ["cnn", "adam", "0.001"]
    assert cells[broken.name][3:6] == ["?", "?", "?"]
    # Every column starts at the same place on every line, however long the run's name.
    for word in ("dataset", "model", "optimizer", "status"):
        col = header.index(word)
        assert all(row[col - 1] == " " and row[col] != " " for row in rows), word
