"""`mnistlab predict`: test images by index, own files and folders, bad files, output formats."""

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mnistlab.cli import cli
from mnistlab.files import load_npz


@pytest.fixture()
def pictures(tmp_path):
    """A folder with a drawn digit (dark on light), a blank page, and an unreadable file."""
    folder = tmp_path / "pics"
    folder.mkdir()
    img = np.full((120, 90), 235, np.uint8)
    img[20:100, 40:52] = 20  # a thick vertical stroke: a "1"
    Image.fromarray(img).save(folder / "one.png")
    Image.fromarray(np.full((50, 50), 240, np.uint8)).save(folder / "blank.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


def test_index_prints_probabilities(digits_run):
    res = CliRunner().invoke(cli, ["predict", str(digits_run.path), "--index", "0", "--index", "5"])
    assert res.exit_code == 0, res.output
    assert res.output.count("probabilities [") == 2 and "predicted" in res.output
    probs = json.loads(res.output.split("probabilities ")[1].split("\n")[0])
    assert len(probs) == 10 and abs(sum(probs) - 1) < 1e-3
    stored = load_npz(digits_run.path / "predictions.npz")["probabilities"][0]
    np.testing.assert_allclose(probs, stored, atol=1e-4)


def test_index_out_of_range(digits_run):
    res = CliRunner().invoke(cli, ["predict", str(digits_run.path), "--index", "100000"])
    assert res.exit_code == 1 and "outside the test set" in res.output


def test_files_table_json_csv_and_show(digits_run, pictures, tmp_path):
    show = tmp_path / "seen"
    res = CliRunner().invoke(cli, ["predict", str(digits_run.path), str(pictures), "--show", str(show)])
    assert res.exit_code == 1  # one unreadable file
    assert "ERROR" in res.output and "broken.png" in res.output
    assert "blank" in res.output  # the blank page is reported, not labelled
    assert sorted(p.name for p in show.iterdir()) == ["blank.seen.png", "one.seen.png"]
    with Image.open(show / "one.seen.png") as seen:
        assert seen.size[1] == 224

    res = CliRunner().invoke(cli, ["predict", str(digits_run.path), str(pictures), "--json"])
    rows = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(res.output)}
    assert rows["broken.png"]["status"] == "error"
    assert rows["blank.jpg"]["status"] == "blank" and rows["blank.jpg"]["label"] is None
    assert rows["one.png"]["status"] == "ok" and len(rows["one.png"]["top"]) == 3

    res = CliRunner().invoke(cli, ["predict", str(digits_run.path), str(pictures / "one.png"), "--csv"])
    assert res.exit_code == 0
    (row,) = list(csv.DictReader(io.StringIO(res.output)))
    assert row["status"] == "ok" and 0 <= float(row["confidence"]) <= 1


def test_plain_keras_model_file(digits_run, pictures):
    res = CliRunner().invoke(
        cli, ["predict", str(pictures / "one.png"), "--model", str(digits_run.path / "model.keras")]
    )
    assert res.exit_code == 0, res.output and "one.png" in res.output


def test_nothing_to_predict_is_a_usage_error(digits_run):
    res = CliRunner().invoke(cli, ["predict", str(digits_run.path)])
    assert res.exit_code == 1 and res.output.startswith("Error: nothing to predict")
    assert "--index" in res.output
