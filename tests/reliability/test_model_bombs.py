"""Model files that exhaust resources or hide one file behind another: refused up front.

A 3 MB ``.keras`` whose config.json or model.weights.h5 inflates to 3 GiB used to drive
``mnistlab evaluate --model`` to 6.7 GB of memory before any error. ``cat legit.h5 other.keras``
passed the allow-list on its HDF5 half while Keras loaded the zip half.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
import zipfile

import pytest
from reliability_helpers import ENV, MNISTLAB
from zipcraft import write_zip, zeros_deflate

from mnistlab.errors import ModelError
from mnistlab.modelfile import load_model_file, read_model_config

GIB3 = 3072  # MiB


def _plain_model():
    import keras

    inp = keras.Input(shape=(8, 8))
    x = keras.layers.Flatten()(inp)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))


@pytest.fixture(scope="module")
def legit(tmp_path_factory):
    """A real model saved by Keras as .keras and as .h5, plus one with a Lambda layer (.keras)."""
    import keras

    folder = tmp_path_factory.mktemp("legit")
    model = _plain_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(folder / "plain.keras")
        model.save(folder / "plain.h5")
        inp = keras.Input(shape=(8, 8))
        x = keras.layers.Lambda(lambda t: t * 2)(keras.layers.Flatten()(inp))
        keras.Model(inp, keras.layers.Dense(10)(x)).save(folder / "lambda.keras")
    return folder


@pytest.fixture(scope="module")
def bombs(legit, tmp_path_factory):
    """Two 3 MB .keras files: config.json, or model.weights.h5, inflating to 3 GiB of zeros."""
    folder = tmp_path_factory.mktemp("bombs")
    data, crc = zeros_deflate(GIB3)
    with zipfile.ZipFile(legit / "plain.keras") as z:
        real = {i.filename: z.read(i.filename) for i in z.infolist()}
    out = {}
    for target in ("config.json", "model.weights.h5"):
        members = [(name, content, 0, zipfile.crc32(content), len(content))
                   for name, content in real.items() if name != target]
        members.append((target, data, 8, crc, GIB3 << 20))
        out[target] = write_zip(folder / f"bomb-{target}.keras", members)
    return out


_LIMITED = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB of address space
    from mnistlab.errors import ModelError
    from mnistlab.modelfile import read_model_config
    try:
        read_model_config(sys.argv[1])
    except ModelError as e:
        print("ModelError:", e)
""")


@pytest.mark.parametrize("member", ["config.json", "model.weights.h5"])
def test_zip_bomb_is_refused_in_bounded_memory(bombs, member):
    path = bombs[member]
    assert path.stat().st_size < 4 << 20
    # The check runs under a 1 GiB address-space limit: reading the member whole would fail with
    # MemoryError (a traceback, non-zero exit), as the old code did.
    res = subprocess.run([sys.executable, "-c", _LIMITED, str(path)], capture_output=True,
                         text=True, timeout=300, env=ENV)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ModelError: refusing to load"), res.stdout
    assert f"member '{member}' declares 3,221,225,472 bytes uncompressed" in res.stdout
    assert "limit of 4 MiB" in res.stdout or "limit of 512 MiB" in res.stdout
    assert "MemoryError" not in res.stderr


def test_zip_bomb_through_the_cli_is_one_clean_error(bombs):
    res = subprocess.run([MNISTLAB, "evaluate", "--model", str(bombs["config.json"]), "--dataset",
                          "digits"], capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 1
    assert res.stderr.startswith("Error: refusing to load") and "decompression bomb" in res.stderr
    assert "Traceback" not in res.stderr


def test_high_compression_ratio_is_refused(legit, tmp_path):
    """Under the size caps but expanding 300x: the ratio check catches it."""
    data, crc = zeros_deflate(300)
    with zipfile.ZipFile(legit / "plain.keras") as z:
        members = [(i.filename, z.read(i.filename), 0, i.CRC, i.file_size) for i in z.infolist()]
    members.append(("assets/padding.bin", data, 8, crc, 300 << 20))
    path = write_zip(tmp_path / "ratio.keras", members)
    with pytest.raises(ModelError, match=r"expands from .* over the limit of 100x"):
        read_model_config(path)


def test_member_larger_than_declared_is_cut_at_the_declared_size(legit, tmp_path):
    """A config.json that declares 100 bytes but inflates to 64 MiB: never read past 100 bytes."""
    data, crc = zeros_deflate(64)
    with zipfile.ZipFile(legit / "plain.keras") as z:
        members = [(i.filename, z.read(i.filename), 0, i.CRC, i.file_size) for i in z.infolist()
                   if i.filename != "config.json"]
    members.append(("config.json", data, 8, crc, 100))
    path = write_zip(tmp_path / "liar.keras", members)
    with pytest.raises(ModelError, match="corrupt"):
        read_model_config(path)


@pytest.mark.parametrize("order", ["h5+keras", "keras+h5"])
@pytest.mark.parametrize("name", ["x.keras", "x.h5"])
def test_polyglot_of_two_model_files_is_refused(legit, tmp_path, order, name):
    """``cat legit.h5 lambda.keras > x.keras``: the HDF5 half is harmless, Keras loads the zip."""
    h5, zp = (legit / "plain.h5").read_bytes(), (legit / "lambda.keras").read_bytes()
    path = tmp_path / name
    path.write_bytes(h5 + zp if order == "h5+keras" else zp + h5)
    with pytest.raises(ModelError) as e:
        load_model_file(path)
    msg = str(e.value)
    assert msg.startswith(f"refusing to load {path}")
    assert "both an HDF5 file and a zip archive" in msg or "data after its zip archive" in msg


@pytest.mark.parametrize("pad", ["lead", "trail"])
@pytest.mark.parametrize("src", ["plain.keras", "plain.h5"])
def test_leading_or_trailing_data_is_refused(legit, tmp_path, src, pad):
    data = (legit / src).read_bytes()
    path = tmp_path / src
    path.write_bytes(b"\0" * 100 + data if pad == "lead" else data + b"\0" * 100)
    with pytest.raises(ModelError, match="refusing to load|not a Keras model file"):
        load_model_file(path)


@pytest.mark.parametrize("src, name, fix", [("plain.h5", "m.keras", "end in .h5"),
                                             ("plain.keras", "m.h5", "end in .keras")])
def test_content_that_does_not_fit_the_name_is_refused(legit, tmp_path, src, name, fix):
    """Keras chooses the reader by name; mnistlab says so instead of checking another format."""
    path = tmp_path / name
    path.write_bytes((legit / src).read_bytes())
    with pytest.raises(ModelError, match=f"Keras chooses how to read a model from its name. Rename it to {fix}"):
        load_model_file(path)


def test_legit_files_still_load(legit):
    for name in ("plain.keras", "plain.h5"):
        assert load_model_file(legit / name).output_shape == (None, 10)
