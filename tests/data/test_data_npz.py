"""Keras-layout .npz reader: accepted variants, clear rejections, and property tests."""

from __future__ import annotations

import io
import itertools
import zipfile

import numpy as np
import pytest
from datafiles import tiny_arrays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mnistlab.data import npz
from mnistlab.errors import DataError

_counter = itertools.count()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("npz")


def _save(folder, **arrays):
    path = folder / f"f{next(_counter)}.npz"
    np.savez(path, **arrays)
    return path


def _keras(**changes):
    x_train, y_train, x_test, y_test = tiny_arrays()
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def test_keras_layout_round_trip(tmp_path):
    arrays = _keras()
    out = npz.read_npz(_save(tmp_path, **arrays))
    for key in npz.KEYS:
        np.testing.assert_array_equal(out[key], arrays[key])
    assert out["x_train"].dtype == np.uint8 and out["y_train"].dtype == np.int64
    assert out["notes"] == []


def test_float_images_in_0_1_are_scaled_and_noted(tmp_path):
    x_train, _, x_test, _ = tiny_arrays()
    out = npz.read_npz(_save(tmp_path, **_keras(x_train=x_train / 255.0, x_test=x_test / 255.0)))
    np.testing.assert_array_equal(out["x_train"], x_train)
    assert any("0..1 were scaled" in n for n in out["notes"])


def test_float_images_in_0_255_are_rounded(tmp_path):
    x_train, _, x_test, _ = tiny_arrays()
    out = npz.read_npz(_save(tmp_path, **_keras(x_train=x_train.astype(np.float32),
                                                 x_test=x_test.astype(np.float64))))
    np.testing.assert_array_equal(out["x_test"], x_test)
    assert any("0..255 were rounded" in n for n in out["notes"])


def test_channel_flat_and_one_hot_variants(tmp_path):
    x_train, y_train, x_test, y_test = tiny_arrays(size=(4, 4))
    out = npz.read_npz(_save(tmp_path, x_train=x_train[..., None], y_train=np.eye(10)[y_train],
                             x_test=x_test.reshape(len(x_test), 16), y_test=y_test[:, None]))
    np.testing.assert_array_equal(out["x_test"], x_test)
    np.testing.assert_array_equal(out["y_train"], y_train)
    assert any("one-hot" in n for n in out["notes"]) and any("reshaped" in n for n in out["notes"])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"x_test": None}, "missing array.*x_test"),
        ({"x_train": np.array([["a"]] * 20)}, "integers or floats.*<U1"),
        ({"y_train": np.full(20, 0.5)}, "whole numbers"),
        ({"y_train": -np.ones(20, np.int64)}, "class indices"),
        ({"x_train": np.full((20, 5, 4), np.nan)}, "NaN"),
        ({"x_train": np.full((20, 5, 4), 300.0)}, r"0\.\.255"),
        ({"x_train": np.full((20, 5, 4), -1, np.int16)}, r"0\.\.255"),
        ({"x_train": np.zeros((20, 5), np.uint8)}, "received shape"),
        ({"x_train": np.zeros((0, 5, 4), np.uint8), "y_train": np.zeros(0, np.uint8)}, "no images"),
        ({"y_train": np.zeros(19, np.uint8)}, "20 images but y_train holds 19"),
        ({"x_test": np.zeros((10, 4, 4), np.uint8)}, "train images are"),
        ({"y_train": np.full((20, 10), 0.3)}, "one-hot"),
    ],
)
def test_rejections_name_the_array_and_fix(tmp_path, changes, match):
    path = _save(tmp_path, **_keras(**changes))
    with pytest.raises(DataError, match=match) as e:
        npz.read_npz(path)
    assert str(path) in str(e.value)


def test_object_arrays_are_refused_before_loading(tmp_path):
    path = tmp_path / "obj.npz"
    objs = np.empty(20, dtype=object)
    objs[:] = [{"evil": i} for i in range(20)]
    np.savez(path, **_keras(y_train=objs))
    with pytest.raises(DataError, match="Python objects"):
        npz.read_npz(path)


def test_not_a_zip_and_a_lying_header(tmp_path):
    plain = tmp_path / "plain.npz"
    plain.write_bytes(b"hello")
    with pytest.raises(DataError, match="not a readable .npz"):
        npz.read_npz(plain)
    # Rewrite x_train's header to claim 10**12 elements; the archive holds far fewer bytes.
    good = _save(tmp_path, **_keras())
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(liar, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "x_train.npy":
                data = data.replace(b"(20, 5, 4)", b"(1000000000000,)")
            dst.writestr(info.filename, data)
    with pytest.raises(DataError, match="declares shape"):
        npz.read_npz(liar)


# ----------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x93NUMPY"]))
def test_random_bytes_raise_dataerror(scratch, data, prefix):
    path = scratch / f"r{next(_counter)}.npz"
    path.write_bytes(prefix + data)
    with pytest.raises(DataError):
        npz.read_npz(path)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_flipped_bytes_in_a_valid_npz(scratch, data):
    buf = io.BytesIO()
    np.savez(buf, **_keras())
    blob = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    path = scratch / f"m{next(_counter)}.npz"
    path.write_bytes(bytes(blob))
    try:
        out = npz.read_npz(path)
    except DataError:
        return
    assert out["x_train"].dtype == np.uint8 and out["y_train"].dtype == np.int64


_dtypes = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(),
                    hnp.boolean_dtypes(), hnp.complex_number_dtypes(), hnp.byte_string_dtypes())


@settings(max_examples=150, deadline=None)
@given(
    x=hnp.arrays(_dtypes, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4)),
    y=hnp.arrays(_dtypes, hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=4)),
    keys=st.sets(st.sampled_from(["x_train", "y_train", "x_test", "y_test", "other"]), min_size=1),
)
def test_arbitrary_arrays_are_valid_or_dataerror(scratch, x, y, keys):
    arrays = {k: (x if k.startswith("x") else y) for k in keys}
    path = _save(scratch, **arrays)
    try:
        out = npz.read_npz(path)
    except DataError:
        return
    assert out["x_train"].dtype == np.uint8 and out["x_train"].ndim == 3
    assert out["y_train"].dtype == np.int64 and len(out["y_train"]) == len(out["x_train"])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupt_array_headers_behind_a_valid_zip(scratch, data):
    # Byte flips above are mostly caught by the zip CRC; here the zip is rewritten with fresh
    # CRCs so the .npy header parser itself sees the damage.
    buf = io.BytesIO()
    np.savez(buf, **_keras())
    target = data.draw(st.sampled_from(npz.KEYS)) + ".npy"
    path = scratch / f"h{next(_counter)}.npz"
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            member = bytearray(src.read(info))
            if info.filename == target:
                for _ in range(data.draw(st.integers(1, 3))):
                    pos = data.draw(st.integers(0, 127))
                    member[pos] = data.draw(st.integers(0, 255))
                if data.draw(st.booleans()):
                    member = member[: data.draw(st.integers(0, len(member)))]
            dst.writestr(info.filename, bytes(member))
    try:
        out = npz.read_npz(path)
    except DataError:
        return
    assert out["x_train"].dtype == np.uint8 and out["y_train"].dtype == np.int64
