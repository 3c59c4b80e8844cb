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
from mnistlab.photos import CAPTION_HEIGHT, caption


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
        assert seen.size[1] == 224 + CAPTION_HEIGHT

    res = CliRunner().invoke(cli, ["predict", str(digits_run.path), str(pictures), "--json"])
    rows = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(res.stdout)}
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


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    """A 1-epoch run on an image folder whose classes have long names (not digits)."""
    from mnistlab.config import load_config
    from mnistlab.training import train

    root = tmp_path_factory.mktemp("named")
    rng = np.random.default_rng(0)
    for k, name in enumerate(["ankle_boot_with_a_long_name", "tee", "bag"]):
        (root / "data" / name).mkdir(parents=True)
        for i in range(12):
            img = rng.integers(0, 60, (28, 28), dtype=np.uint8)
            img[4 + 6 * k: 10 + 6 * k, 4:24] = 250
            Image.fromarray(img).save(root / "data" / name / f"{i}.png")
    cfg = load_config(overrides=["train.epochs=1"], data__path=str(root / "data"))
    return train(cfg, out=root / "runs", command=["test"], report=False)


def _photo(path, value=20):
    img = np.full((60, 60), 235, np.uint8)
    img[10:50, 25:35] = value
    Image.fromarray(img).save(path)
    return path


def test_long_class_and_file_names_keep_the_table_aligned(named_run, tmp_path):
    short = _photo(tmp_path / "a.png")
    long = _photo(tmp_path / f"{'a-photo-with-a-long-file-name-' * 3}.png")
    res = CliRunner().invoke(cli, ["predict", str(named_run.path), str(short), str(long)])
    assert res.exit_code == 0, res.output
    header, *rows = res.stdout.splitlines()
    assert len(rows) == 2
    label_at, conf_end = header.index("label"), header.index("conf") + len("conf")
    for row in rows:
        file, rest = row[:label_at].rstrip(), row[label_at:]
        assert file in (str(short), str(long)) and row[label_at - 2:label_at] == "  "
        assert rest.split("  ")[0] in named_run.class_names  # the whole name, not cut
        conf = row[:conf_end].rsplit(" ", 1)[1]
        assert 0 <= float(conf) <= 1 and row[conf_end:conf_end + 2] == "  "


def test_a_model_of_other_classes_says_so_once_on_stderr(named_run, digits_run, tmp_path):
    photo = _photo(tmp_path / "digit.png")
    res = CliRunner().invoke(cli, ["predict", str(named_run.path), str(photo), str(photo), "--json"])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("Note: this model was trained on custom (3 classes: "
                            f"{', '.join(named_run.class_names)}): a digit photo will be classified "
                            "as one of these.") == 1
    assert len(json.loads(res.stdout)) == 2  # stdout stays machine-readable
    by_model = CliRunner().invoke(cli, ["predict", str(photo), "--model",
                                        str(named_run.path / "model.keras")])
    assert "Note: this model was not trained on digits (3 classes: " in by_model.stderr
    # Test images come from the model's own dataset, and digit models need no note.
    assert "Note:" not in CliRunner().invoke(cli, ["predict", str(named_run.path), "--index", "0"]).stderr
    assert "Note:" not in CliRunner().invoke(cli, ["predict", str(digits_run.path), str(photo)]).stderr


def test_files_in_a_folder_that_are_not_images_are_counted(digits_run, pictures):
    (pictures / "notes.txt").write_text("not a picture")
    (pictures / "sub").mkdir()
    (pictures / "sub" / "data.csv").write_text("1,2")
    res = CliRunner().invoke(cli, ["predict", str(digits_run.path), str(pictures), "--json"])
    assert res.exit_code == 1  # broken.png is an image that cannot be read: still an error
    assert "Skipped 2 files that are not images: notes.txt, data.csv\n" in res.stderr
    assert sorted(r["file"].rsplit("/", 1)[1] for r in json.loads(res.stdout)) == [
        "blank.jpg", "broken.png", "one.png"]


def test_show_images_carry_the_label_and_confidence(digits_run, pictures, tmp_path):
    show = tmp_path / "seen"
    res = CliRunner().invoke(cli, ["predict", str(digits_run.path), str(pictures / "one.png"),
                                   str(pictures / "blank.jpg"), "--show", str(show), "--json"])
    assert res.exit_code == 0, res.output
    one, blank = json.loads(res.stdout)
    assert one["status"] == "ok" and blank["status"] == "blank"
    strips = {}
    for name in ("one", "blank"):
        with Image.open(show / f"{name}.seen.png") as seen:
            pixels = np.asarray(seen.convert("L"))
        strip = pixels[224:]
        assert strip.shape[0] == CAPTION_HEIGHT and (strip < 100).sum() > 50  # dark text drawn
        assert (strip[:, :4] == 255).all()  # on a white strip
        strips[name] = strip
    assert strips["one"].shape != strips["blank"].shape or (strips["one"] != strips["blank"]).any()


def test_caption_text():
    from mnistlab.inference import Prediction

    def pred(status, name, confidence, message=""):
        return Prediction(label=None if name is None else 7, name=name, confidence=confidence,
                          probabilities=np.zeros(10, np.float32), top_k=(), status=status,
                          message=message, image=np.zeros((28, 28), np.float32))

    assert caption(pred("ok", "7", 0.9312)) == "predicted 7 (confidence 0.93)"
    assert caption(pred("blank", None, 0.0, "no ink")) == "blank: no ink"
