"""``plan_prediction``: which model predicts, on which test images and files; bad combinations."""

import numpy as np
import pytest

from mnistlab.errors import ConfigError, ImageError, RunError
from mnistlab.files import load_npz
from mnistlab.photos import classes_note, plan_prediction, skipped_text
from mnistlab.runs import load_run


def test_run_directory_with_indices_and_files(digits_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the inputs must exist: missing paths are refused up front
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    plan = plan_prediction([digits_run.path, "a.png", "folder"], indices=[3, 0])
    stored = load_npz(digits_run.path / "predictions.npz")
    assert [(i, true) for i, true, _ in plan.tests] == [(3, int(stored["labels"][3])),
                                                        (0, int(stored["labels"][0]))]
    np.testing.assert_array_equal(plan.tests[0][2], stored["images"][3])
    assert plan.files == ["a.png", "folder"]
    assert list(plan.predictor.class_names) == digits_run.manifest["dataset"]["class_names"]
    assert plan.predictor.preprocess_params == digits_run.preprocess_params
    p = plan.predictor.predict(plan.tests[0][2], preprocess=False)
    np.testing.assert_allclose(p.probabilities, stored["probabilities"][3], atol=1e-4)


def test_an_open_run_is_used_as_is(digits_run):
    plan = plan_prediction([load_run(digits_run.path)], indices=[1])
    assert plan.tests[0][0] == 1 and plan.files == []


def test_model_file_takes_every_argument_as_an_image(digits_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("one.png", "two.png"):
        (tmp_path / name).write_bytes(b"")
    plan = plan_prediction(["one.png", "two.png"], model_path=digits_run.path / "model.keras")
    assert plan.files == ["one.png", "two.png"] and plan.tests == []
    assert plan.predictor.class_names == tuple(str(i) for i in range(10))


def test_index_with_model_file_is_refused_before_loading_anything(tmp_path):
    with pytest.raises(ConfigError, match="--index needs a run directory.*received --model"):
        plan_prediction(["x.png"], indices=[0], model_path=tmp_path / "missing.keras")


def test_nothing_to_predict_is_refused_before_loading_anything(tmp_path):
    with pytest.raises(ConfigError, match="nothing to predict"):
        plan_prediction([tmp_path / "not-a-run"])


def test_bad_run_and_bad_index(digits_run, tmp_path):
    with pytest.raises(RunError, match="run directory not found"):
        plan_prediction([tmp_path / "nope"], indices=[0])
    with pytest.raises(ImageError, match="outside the test set"):
        plan_prediction([digits_run.path], indices=[10_000])


def test_skipped_text_counts_and_names_a_few():
    assert skipped_text([]) is None
    assert skipped_text(["d/a.txt"]) == "Skipped 1 file that is not an image: a.txt"
    many = [f"d/{i}.csv" for i in range(8)]
    assert skipped_text(many) == ("Skipped 8 files that are not images: 0.csv, 1.csv, 2.csv, "
                                  "3.csv, 4.csv, ... (3 more)")


def test_classes_note_names_the_dataset_and_its_classes():
    from mnistlab.data.sources import FASHION_CLASSES

    note = classes_note(FASHION_CLASSES, "fashion_mnist")
    assert note.startswith("Note: this model was trained on fashion_mnist (clothing: T-shirt/top, "
                           "Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot)")
    assert classes_note([str(i) for i in range(10)], "mnist") is None
    assert classes_note([str(i) for i in range(10)], "digits") is None
    many = classes_note([f"c{i}" for i in range(12)], "custom")
    assert "(12 classes: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, ...)" in many
