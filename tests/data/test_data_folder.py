"""Image folders: layouts, decoding to grayscale at one size, and clear errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnistlab.data import folder
from mnistlab.errors import DataError


def _img(path, size=(10, 12), value=200, mode="L", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, value, value)
    Image.new(mode, size, color).save(path, format=fmt)
    return path


def _classes(root, names=("cat", "dog"), per_class=3, ext="png"):
    for label, name in enumerate(names):
        for i in range(per_class):
            _img(root / name / f"{i}.{ext}", value=50 + 100 * label, mode="RGB" if i else "L")
    return root


def test_class_folders_are_read_resized_and_labelled(tmp_path):
    out = folder.read_folder(_classes(tmp_path))
    assert out["class_names"] == ("cat", "dog")
    assert out["x_train"].shape == (6, 28, 28) and out["x_train"].dtype == np.uint8
    assert out["y_train"].tolist() == [0, 0, 0, 1, 1, 1]
    assert out["x_test"] is None
    assert set(np.unique(out["x_train"][out["y_train"] == 1])) == {150}


def test_train_and_test_folders_and_custom_size(tmp_path):
    _classes(tmp_path / "train")
    _classes(tmp_path / "test", names=("dog",), per_class=2)
    out = folder.read_folder(tmp_path, size=(8, 6))
    assert out["x_train"].shape == (6, 8, 6) and out["x_test"].shape == (2, 8, 6)
    assert out["y_test"].tolist() == [1, 1]


def test_numeric_classes_sort_naturally(tmp_path):
    out = folder.read_folder(_classes(tmp_path, names=("10", "2", "1"), per_class=1))
    assert out["class_names"] == ("1", "2", "10")


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_allowed_formats(tmp_path, fmt):
    _img(tmp_path / "a" / "x.img", fmt=fmt)
    _img(tmp_path / "b" / "y.img", fmt=fmt)
    assert folder.read_folder(tmp_path)["x_train"].shape == (2, 28, 28)


def test_non_image_file_is_named(tmp_path):
    _classes(tmp_path)
    bad = tmp_path / "dog" / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(DataError, match="not an image in an allowed format") as e:
        folder.read_folder(tmp_path)
    assert str(bad) in str(e.value)


def test_format_outside_the_allow_list_is_refused(tmp_path):
    _classes(tmp_path)
    ppm = _img(tmp_path / "cat" / "x.ppm", fmt="PPM")
    with pytest.raises(DataError, match="allowed format") as e:
        folder.read_folder(tmp_path)
    assert str(ppm) in str(e.value)


def test_truncated_image_is_named(tmp_path):
    _classes(tmp_path)
    png = _img(tmp_path / "cat" / "big.png", size=(64, 64))
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated") as e:
        folder.read_folder(tmp_path)
    assert str(png) in str(e.value)


def test_pixel_cap(tmp_path):
    _classes(tmp_path)
    with pytest.raises(DataError, match="10x12 pixels is over the 100-pixel limit"):
        folder.read_folder(tmp_path, max_pixels=100)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda r: _img(r / "loose.png"), "directly in"),
        (lambda r: (r / "empty").mkdir(), "has no images"),
        (lambda r: (r / "cat" / "sub").mkdir(), "a folder inside a class folder"),
    ],
)
def test_layout_errors(tmp_path, make, match):
    _classes(tmp_path)
    make(tmp_path)
    with pytest.raises(DataError, match=match):
        folder.read_folder(tmp_path)


def test_unknown_test_class(tmp_path):
    _classes(tmp_path / "train")
    _classes(tmp_path / "test", names=("bird",), per_class=1)
    with pytest.raises(DataError, match="bird.*not in"):
        folder.read_folder(tmp_path)


def test_hidden_files_are_skipped(tmp_path):
    _classes(tmp_path)
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / ".git").mkdir()
    assert len(folder.read_folder(tmp_path)["y_train"]) == 6


def test_decompression_bomb_is_refused(tmp_path):
    # 100 M one-bit pixels compress to a few kB but are over Pillow's bomb threshold.
    _classes(tmp_path)
    bomb = tmp_path / "cat" / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(bomb)
    with pytest.raises(DataError, match="too many pixels|pixel limit") as e:
        folder.read_folder(tmp_path)
    assert str(bomb) in str(e.value)
