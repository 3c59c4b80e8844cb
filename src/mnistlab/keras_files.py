"""Keras' model files for a head-start run, written without importing Keras.

A run that trains before Keras is loaded (``mnistlab.headstart``) still imported Keras beside its
first epochs, only to save ``model.keras`` and ``model.h5`` at the end: about a second of CPU that
the training threads shared. But Keras writes the same bytes for the same model whatever its
weights: HDF5 keeps every variable as a contiguous dataset at a fixed offset (tested: a template
made from one model, filled with another's arrays, is byte for byte what Keras saves for the
other). So the first run of a model saves its files through Keras and keeps them here as a
template: the files, and where each variable's bytes are. Later runs of the same model copy the
template and write their own arrays at those offsets; the ``.keras`` zip gets a fresh
``metadata.json`` (its ``date_saved``).

Templates live in ``$XDG_CACHE_HOME/mnistlab/keras-files`` (``MNISTLAB_KERAS_FILES``: a folder,
or ``off``), one folder per key: the Keras and h5py versions, mnistlab's model code and every
setting the files can depend on (all of the model and training config but the epoch count, the
image shape, the class count, the steps per epoch). A template that does not read back whole is
ignored, and the run imports Keras as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np

FORMAT = 1  # of the template folder; part of the key
KEEP = 32  # templates kept; the least recently used go (a study's trials each make one)
# No template for bigger files (the tutorial's two are 0.75 MB; one of 784-4096-4096: ~300 MB):
# 32 of those would fill a disk, and writing them costs the same as Keras' save next to training
# that long.
MAX_BYTES = 64 << 20
MEMBERS = ("model.h5", "weights.h5", "config.json", "architecture.json", "summary.txt",
           "layout.json")


def folder() -> Path | None:
    """Where templates are kept; None when ``MNISTLAB_KERAS_FILES=off``."""
    chosen = os.environ.get("MNISTLAB_KERAS_FILES")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnistlab" / "keras-files"


def key(config, image_shape, num_classes: int) -> str:
    """The template key of a run's model files (computed without importing Keras). The steps
    per epoch are not in it: only a learning-rate schedule reads them, and a head start has
    none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = {name: version(name) for name in ("keras", "h5py")}
    except PackageNotFoundError:
        versions = None
    here = Path(__file__).parent
    code = hashlib.sha256()
    for name in ("model.py", "keras_files.py"):
        code.update((here / name).read_bytes())
    train = config.train.model_dump(mode="json")
    train.pop("epochs")
    what = {"format": FORMAT, "versions": versions, "backend": "jax", "code": code.hexdigest(),
            "model": config.model.model_dump(mode="json"), "train": train, "seed": config.seed,
            "image_shape": list(image_shape), "num_classes": int(num_classes)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


class Template:
    """One model's files as Keras writes them, and where each variable's bytes go.

    ``layout["variables"]``: per variable, in the order of ``model.weights`` then the optimizer's
    variables, its dtype, shape and byte offsets in ``model.h5`` and in the ``.keras`` weights.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.layout = json.loads(files["layout.json"])
        for var in self.layout["variables"]:
            size = np.dtype(var["dtype"]).itemsize * int(np.prod(var["shape"], dtype=np.int64))
            for name in ("model.h5", "weights.h5"):
                if not 0 <= var[name] <= len(files[name]) - size:
                    raise ValueError(f"{name}: variable outside the file")

    @classmethod
    def load(cls, key: str) -> Template | None:
        """The template kept under ``key``, or None (none kept, off, or unreadable)."""
        where = folder()
        if where is None:
            return None
        try:
            template = cls({name: (where / key / name).read_bytes() for name in MEMBERS})
        except (OSError, ValueError, KeyError, TypeError):
            return None
        with contextlib.suppress(OSError):  # used: the last to go (``_prune``)
            os.utime(where / key)
        return template

    def arrays_fit(self, arrays) -> bool:
        """Do ``arrays`` (weights, then optimizer values) match the template's variables?"""
        variables = self.layout["variables"]
        return len(arrays) == len(variables) and all(
            np.asarray(a).dtype == np.dtype(v["dtype"]) and list(np.shape(a)) == v["shape"]
            for a, v in zip(arrays, variables, strict=True))

    def fill(self, name: str, arrays) -> bytes:
        """``model.h5`` or ``weights.h5`` holding ``arrays``."""
        out = bytearray(self.files[name])
        for a, var in zip(arrays, self.layout["variables"], strict=True):
            raw = np.ascontiguousarray(a, dtype=np.dtype(var["dtype"]).newbyteorder("<"))
            out[var[name]:var[name] + raw.nbytes] = raw.tobytes()
        return bytes(out)

    def keras_zip(self, arrays) -> bytes:
        """A ``.keras`` file holding ``arrays``: its members in Keras' order, stored."""
        metadata = {"keras_version": self.layout["keras_version"],
                    "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S")}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
            z.writestr(zipfile.ZipInfo("metadata.json"), json.dumps(metadata))  # 1980, as Keras
            z.writestr(zipfile.ZipInfo("config.json"), self.files["config.json"])
            z.writestr(zipfile.ZipInfo("model.weights.h5", time.localtime()[:6]),
                       self.fill("weights.h5", arrays))
        return buffer.getvalue()


def variables(model) -> list[np.ndarray]:
    """A Keras model's weights, then its optimizer's variables, as numpy arrays."""
    return [np.array(v.numpy()) for v in [*model.weights, *model.optimizer.variables]]


def make_from_model(key: str, model) -> bool:
    """``make`` for a compiled model with its optimizer built, saved here to a scratch folder."""
    import tempfile

    from mnistlab.model import summary_text

    with tempfile.TemporaryDirectory() as scratch:
        keras_path, h5_path = Path(scratch) / "model.keras", Path(scratch) / "model.h5"
        model.save(keras_path)
        save_h5(model, h5_path)
        return make(key, model, keras_path, h5_path, model.to_json(), summary_text(model))


def save_h5(model, path) -> None:
    """``model.save(path)`` to ``.h5`` without Keras' warning (through absl logging) that HDF5 is
    a legacy format: the tutorial saves ``.h5``, so mnistlab keeps it on purpose."""
    import logging
    import warnings

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.save(path)
    finally:
        absl.setLevel(level)


def make(key: str, model, keras_path, h5_path, arch_json: str, summary: str) -> bool:
    """Keep a template of ``model``'s files (just saved by Keras); True if one was kept.

    Each variable's array must be found exactly once among each file's datasets, every dataset
    must be one of them, contiguous and uncompressed; otherwise nothing is kept (a model whose
    files this module cannot refill, or two variables with the same bytes). Nor when the files
    are over ``MAX_BYTES``, or the template folder cannot be written (a cache: never an error).
    """
    import h5py

    where = folder()
    if where is None:
        return False
    if Path(h5_path).stat().st_size + Path(keras_path).stat().st_size > MAX_BYTES:
        return False
    arrays = variables(model)
    with zipfile.ZipFile(keras_path) as z:
        weights, config_json = z.read("model.weights.h5"), z.read("config.json")
        metadata = json.loads(z.read("metadata.json"))
    h5 = Path(h5_path).read_bytes()
    offsets = {}
    for name, data in (("model.h5", h5), ("weights.h5", weights)):
        with h5py.File(io.BytesIO(data), "r") as f:
            found = _offsets(f, arrays)
        if found is None:
            return False
        offsets[name] = found
    layout = {"keras_version": metadata["keras_version"], "variables": [
        {"dtype": a.dtype.str, "shape": list(a.shape), "model.h5": offsets["model.h5"][i],
         "weights.h5": offsets["weights.h5"][i]} for i, a in enumerate(arrays)]}
    files = {"model.h5": h5, "weights.h5": weights, "config.json": config_json,
             "architecture.json": arch_json.encode(), "summary.txt": summary.encode(),
             "layout.json": json.dumps(layout).encode()}
    try:
        _keep(where / key, files)
    except OSError:  # a read-only or full cache folder
        return False
    return True


def _offsets(f, arrays) -> list[int] | None:
    """Each array's byte offset in HDF5 file ``f``, or None unless each dataset holds exactly
    one of them, contiguous and unfiltered."""
    import h5py

    datasets = []
    f.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
    if len(datasets) != len(arrays):
        return None
    found = []
    for a in arrays:
        want = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        hits = [d for d in datasets if d.dtype == a.dtype and d.shape == a.shape
                and d.chunks is None and not d.compression and d.id.get_offset() is not None
                and np.ascontiguousarray(d[()]).astype(a.dtype.newbyteorder("<")).tobytes()
                == want]
        if len(hits) != 1:
            return None
        found.append(int(hits[0].id.get_offset()))
    return found if len(set(found)) == len(found) else None


def _keep(target: Path, files: dict[str, bytes]) -> None:
    """Write the template folder whole, or not at all (a folder renamed into place)."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        try:
            staging.rename(target)
        except OSError:  # a template there already: another run's (kept), or a damaged one
            if Template.load(target.name) is None:
                shutil.rmtree(target, ignore_errors=True)
                with contextlib.suppress(OSError):  # another run replaced it meanwhile
                    staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune(target.parent)


def _prune(where: Path) -> None:
    """Remove all but the ``KEEP`` most recently used templates."""
    import shutil

    def used(folder: Path) -> float:
        try:
            return folder.stat().st_mtime
        except OSError:
            return 0.0

    folders = sorted((f for f in where.iterdir() if not f.name.startswith(".")), key=used)
    for old in folders[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
