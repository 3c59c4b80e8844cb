"""``mnistlab tune`` on the command line: errors, the runs listing, rebuilding the report."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mnistlab.cli import cli

from .conftest import SPACE


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("storage, expected", [
    ("foo://somewhere/db", "unsupported storage 'foo'"),
    ("not a url", "invalid storage URL"),
    ("postgresql:///nohost", "names no host"),
    ("sqlite://", "names no database file"),
    ("postgresql://someone:secret@127.0.0.1:1/db", "cannot open study storage"),
])
def test_bad_or_unreachable_storage(tmp_path, storage, expected):
    result = _invoke("tune", "--dataset", "digits", "--storage", storage, "--out", str(tmp_path))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and expected in result.output
    assert "Traceback" not in result.output and "secret" not in result.output


def test_broken_space_file(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[train]\nlerning_rate = { type = "log", low = 0.01, high = 0.1 }\n')
    result = _invoke("tune", "--dataset", "digits", "--space", str(space), "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "Error: " in result.output and "'train.lerning_rate'" in result.output
    assert "train.learning_rate" in result.output  # the valid fields are listed
    assert not (tmp_path / "tune-tutorial-digits").exists()  # nothing was started


def test_unknown_dataset_or_preset(tmp_path):
    result = _invoke("tune", "--preset", "nope", "--out", str(tmp_path))
    assert result.exit_code == 1 and "unknown preset 'nope'" in result.output


def test_tune_lists_studies_and_rebuilds_the_report(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    runs = tmp_path / "runs"
    result = _invoke("tune", "--dataset", "digits", "--space", str(space), "--trials", "2",
                     "--study", "c", "--out", str(runs), "--no-retrain")
    assert result.exit_code == 0, result.output
    assert "Trial 0 [worker 0]" in result.output and "Trial 1 [worker 0]" in result.output
    assert "Study c: " in result.output and "tune.html" in result.output

    listing = _invoke("runs", str(runs))
    assert "tune-c" in listing.output and "study, 2 trials" in listing.output

    html = runs / "tune-c" / "tune.html"
    html.unlink()
    rebuilt = _invoke("tune", "--report", str(runs / "tune-c"))
    assert rebuilt.exit_code == 0 and html.is_file()
    assert "data:image/png;base64," in html.read_text()

    missing = _invoke("tune", "--report", str(tmp_path))
    assert missing.exit_code == 1 and "not a study folder" in missing.output
