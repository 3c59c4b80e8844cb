"""Property: whatever bytes a model file holds, mnistlab returns a model or raises ModelError.

Three generators: raw bytes (with a zip or HDF5 magic number now and then), a real ``.keras`` zip
whose ``config.json`` is arbitrary JSON, and a real ``.keras`` zip with bytes flipped or cut.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistlab.errors import ModelError
from mnistlab.modelfile import load_model_file, read_model_config

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope="module")
def plain_bytes(tmp_path_factory):
    import keras

    inp = keras.Input(shape=(4, 4))
    x = keras.layers.Flatten()(inp)
    path = tmp_path_factory.mktemp("fuzz") / "plain.keras"
    keras.Model(inp, keras.layers.Dense(3)(x)).save(path)
    return path.read_bytes()


def _load(path):
    """Both entry points; anything but a model or ModelError fails the property."""
    with contextlib.suppress(ModelError):
        read_model_config(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model_file(path)
    except ModelError as e:
        assert str(e)  # a message, always
        return None
    assert hasattr(model, "predict")
    return model


prefixes = st.sampled_from([b"", b"PK\x03\x04", b"\x89HDF\r\n\x1a\n"])


@SETTINGS
@given(prefix=prefixes, body=st.binary(max_size=2048))
def test_arbitrary_bytes(tmp_path, prefix, body):
    p = tmp_path / "m.keras"
    p.write_bytes(prefix + body)
    _load(p)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["class_name", "module", "config", "layers", "name",
                                       "registered_name", "x"]) | st.text(max_size=8),
                      children, max_size=5),
    max_leaves=30,
)


@SETTINGS
@given(config=json_values)
def test_arbitrary_config_json_in_a_real_keras_zip(tmp_path, plain_bytes, config):
    src = zipfile.ZipFile(io.BytesIO(plain_bytes))
    p = tmp_path / "m.keras"
    with zipfile.ZipFile(p, "w") as out:
        for item in src.infolist():
            data = src.read(item.filename)
            out.writestr(item, json.dumps(config).encode() if item.filename == "config.json" else data)
    _load(p)


@SETTINGS
@given(data=st.data())
def test_damaged_real_keras_zip(tmp_path, plain_bytes, data):
    raw = bytearray(plain_bytes)
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    p = tmp_path / "m.keras"
    p.write_bytes(bytes(raw[:cut]))
    _load(p)
