"""IDX reader: round trips through the test's own writer, exact errors, and property tests."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from datafiles import idx_bytes, tiny_arrays, write_idx_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from mnistlab.data import idx
from mnistlab.errors import DataError

IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
LABELS = np.array([0, 9, 3], dtype=np.uint8)


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_images_and_labels(tmp_path, gz):
    for name, array, kind in (("img", IMAGES, "images"), ("lab", LABELS, "labels")):
        data = idx_bytes(array)
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if gz else data)
        out = idx.read_idx(path, kind)
        assert out.dtype == np.uint8 and out.shape == array.shape
        np.testing.assert_array_equal(out, array)
        assert not out.flags.writeable  # read from a raw file into an array or not, the same


@pytest.mark.parametrize("gz", [False, True])
def test_read_dir_round_trip(tmp_path, gz):
    x_train, y_train, x_test, y_test = tiny_arrays()
    write_idx_dir(tmp_path, x_train, y_train, x_test, y_test, gz=gz)
    out = idx.read_idx_dir(tmp_path)
    np.testing.assert_array_equal(out["x_train"], x_train)
    np.testing.assert_array_equal(out["y_test"], y_test)
    assert out["y_train"].dtype == np.int64


def test_dotted_original_names_are_found(tmp_path):
    x_train, y_train, x_test, y_test = tiny_arrays()
    for name, array in (("train-images.idx3-ubyte", x_train), ("train-labels.idx1-ubyte", y_train),
                        ("t10k-images.idx3-ubyte", x_test), ("t10k-labels.idx1-ubyte", y_test)):
        (tmp_path / name).write_bytes(idx_bytes(array))
    assert idx.read_idx_dir(tmp_path)["x_test"].shape == x_test.shape


def _check(data: bytes, kind: str, match: str, name="bad.idx", tmp_path=None):
    if tmp_path is not None:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataError, match=match) as e:
            idx.read_idx(path, kind)
        assert str(path) in str(e.value)
        return
    with pytest.raises(DataError, match=match):
        idx.parse_idx(io.BytesIO(data), kind, name=name)


def test_wrong_magic_says_which_file_it_is(tmp_path):
    _check(idx_bytes(LABELS), "images", "IDX labels file: pass the images file", tmp_path=tmp_path)
    _check(idx_bytes(IMAGES, magic=0x0D03), "images", "received 3331", tmp_path=tmp_path)


def test_truncated_and_overlong_files(tmp_path):
    good = idx_bytes(IMAGES)
    _check(good[:-1], "images", "truncated", tmp_path=tmp_path)
    _check(good + b"\0", "images", "extra bytes", tmp_path=tmp_path)
    _check(good[:10], "images", "header is cut short", tmp_path=tmp_path)
    _check(good[:2], "images", "too short", tmp_path=tmp_path)
    _check(gzip.compress(good)[:-12], "images", "truncated or corrupt", tmp_path=tmp_path)
    _check(gzip.compress(good + b"\0"), "images", "extra bytes")
    _check(gzip.compress(good)[:-1] + b"\xff", "images", "truncated or corrupt")  # bad size


def test_empty_and_huge_headers():
    _check(idx_bytes(np.zeros((0, 28, 28), np.uint8)), "images", "no images")
    _check(idx_bytes(np.zeros((0,), np.uint8)), "labels", "no labels")
    huge = (2051).to_bytes(4, "big") + (60000).to_bytes(4, "big") + (2**31).to_bytes(4, "big") * 2
    _check(huge, "images", "limit")


def test_counts_must_agree_and_labels_in_range(tmp_path):
    x_train, y_train, x_test, y_test = tiny_arrays()
    write_idx_dir(tmp_path / "a", x_train, y_train[:-1], x_test, y_test)
    with pytest.raises(DataError, match="20 images but .* 19 labels"):
        idx.read_idx_dir(tmp_path / "a")
    y_bad = y_train.copy()
    y_bad[0] = 12
    write_idx_dir(tmp_path / "b", x_train, y_bad, x_test, y_test)
    with pytest.raises(DataError, match="label.* above 9"):
        idx.read_idx_dir(tmp_path / "b")
    assert idx.read_idx_dir(tmp_path / "b", max_label=None)["y_train"].max() == 12


def test_missing_file_is_named(tmp_path):
    x_train, y_train, x_test, y_test = tiny_arrays()
    write_idx_dir(tmp_path, x_train, y_train, x_test, y_test)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        idx.read_idx_dir(tmp_path)


# ----------------------------------------------------------------------------------------------
# Properties: whatever the bytes, the reader returns a well-formed array or raises DataError.


def _parse_or_dataerror(data: bytes, kind: str):
    try:
        out = idx.parse_idx(io.BytesIO(data), kind)
    except DataError:
        return None
    assert out.dtype == np.uint8 and out.ndim == (3 if kind == "images" else 1)
    assert len(out) > 0
    return out


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["images", "labels"]), st.booleans())
def test_random_bytes_never_escape_as_other_errors(data, kind, gz):
    _parse_or_dataerror(gzip.compress(data) if gz else data, kind)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["images", "labels"]),
    st.booleans(),
    st.data(),
)
def test_corrupted_valid_files(kind, gz, draw):
    good = idx_bytes(IMAGES if kind == "images" else LABELS)
    blob = gzip.compress(good) if gz else good
    how = draw.draw(st.sampled_from(["flip", "truncate", "append"]))
    if how == "truncate":
        cut = draw.draw(st.integers(0, len(blob) - 1))
        assert _parse_or_dataerror(blob[:cut], kind) is None
    elif how == "append":
        extra = draw.draw(st.binary(min_size=1, max_size=20))
        if gz:  # trailing garbage after a gzip member is either another member or an error
            _parse_or_dataerror(blob + extra, kind)
        else:
            assert _parse_or_dataerror(blob + extra, kind) is None
    else:
        pos = draw.draw(st.integers(0, len(blob) - 1))
        byte = draw.draw(st.integers(0, 255))
        mutated = blob[:pos] + bytes([byte]) + blob[pos + 1:]
        out = _parse_or_dataerror(mutated, kind)
        if out is not None and not gz and pos < (8 if kind == "labels" else 16):
            # a header that still parses must describe exactly the bytes present
            assert out.size == len(good) - (8 if kind == "labels" else 16)


def test_a_verified_gzipped_file_is_unpacked_once_and_read_from_the_copy(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    x = tiny_arrays()[0]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(x)))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert np.array_equal(idx.read_idx(path, "images", sha), x)
    copy = idx.unpacked_dir() / f"{sha}-images.idx"
    assert copy.read_bytes() == idx_bytes(x)  # a plain IDX file
    path.write_bytes(b"not read any more")  # the copy answers (the caller verified the sha)
    assert np.array_equal(idx.read_idx(path, "images", sha), x)
    # a damaged copy is not trusted: the original is unpacked again
    path.write_bytes(gzip.compress(idx_bytes(x)))
    copy.write_bytes(idx_bytes(x)[:-3])
    assert np.array_equal(idx.read_idx(path, "images", sha), x)
    assert copy.read_bytes() == idx_bytes(x)
    # no sha256, or a raw file: nothing is written
    other = tmp_path / "t10k-images-idx3-ubyte"
    other.write_bytes(idx_bytes(x[:3]))
    idx.read_idx(other, "images", "f" * 64)
    idx.read_idx(path, "images")
    assert sorted(p.name for p in idx.unpacked_dir().iterdir()) == [copy.name]


def test_an_unwritable_cache_only_means_unpacking_every_time(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    x = tiny_arrays()[0]
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(x)))
    assert np.array_equal(idx.read_idx(path, "images", "a" * 64), x)


def test_several_gzip_members_read_as_gzip_reads_them(tmp_path):
    x = tiny_arrays()[0]
    data = idx_bytes(x)
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(data[:100]) + gzip.compress(data[100:]) + b"\0\0\0")
    assert np.array_equal(idx.read_idx(path, "images"), x)
    assert gzip.decompress(path.read_bytes()) == data
