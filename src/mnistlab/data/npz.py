"""Keras-layout ``.npz`` files (``x_train``, ``y_train``, ``x_test``, ``y_test``), checked strictly.

Loaded with ``allow_pickle=False``. Each array's header is read before its data, so a corrupt or
hostile file cannot make us allocate more than the archive really holds. Images may be uint8
0-255, other integers 0-255, or floats in 0..1 or 0..255 (scaled and rounded to uint8, noted);
``(N, H, W, 1)`` and flat ``(N, H*W)`` square images are reshaped. Labels may be integers, integral
floats, ``(N, 1)`` or one-hot ``(N, C)``.
"""

from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mnistlab.errors import DataError
from mnistlab.files import load_npz

KEYS = ("x_train", "y_train", "x_test", "y_test")
MAX_BYTES = 1 << 32
# What numpy and zipfile raise on damaged archives; the .npy header parser tokenizes Python
# literal syntax, hence the tokenizer's and the parser's errors.
_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
           NotImplementedError, SyntaxError, tokenize.TokenError, TypeError, OverflowError,
           MemoryError, RecursionError)


def read_npz(path: str | os.PathLike) -> dict:
    """Read and normalise a Keras-layout ``.npz``.

    Args:
        path: the ``.npz`` file.

    Returns:
        ``{"x_train": uint8 (N, H, W), "y_train": int64 (N,), "x_test": uint8 (M, H, W),
        "y_test": int64 (M,), "notes": [str, ...]}``.

    Raises:
        DataError: not an npz, missing keys, object arrays, bad dtypes, shapes or values.
    """
    path = Path(path)
    fix = "Save it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
    try:
        headers = _headers(path)
    except DataError:
        raise
    except _ERRORS as e:
        raise DataError(
            f"{path}: not a readable .npz archive ({type(e).__name__}: {e}). {fix}"
        ) from None
    missing = [k for k in KEYS if k not in headers]
    if missing:
        raise DataError(
            f"{path}: missing array(s) {', '.join(missing)}. {fix}; "
            f"received arrays {sorted(headers) or 'none'}"
        )
    try:
        arrays = load_npz(path, keys=KEYS)
    except _ERRORS as e:
        raise DataError(
            f"{path}: cannot read the arrays ({type(e).__name__}: {e}). {fix}"
        ) from None
    notes: list[str] = []
    out = {"notes": notes}
    scale = _float_scale(path, arrays, notes)
    for split in ("train", "test"):
        x = images_uint8(arrays[f"x_{split}"], f"{path}: x_{split}", scale, notes)
        y = labels_int64(arrays[f"y_{split}"], f"{path}: y_{split}", notes)
        if len(x) != len(y):
            raise DataError(
                f"{path}: x_{split} holds {len(x)} images but y_{split} holds {len(y)} labels. "
                "Save matching arrays"
            )
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise DataError(
            f"{path}: train images are {out['x_train'].shape[1:]} but test images are "
            f"{out['x_test'].shape[1:]}. Save both at one size"
        )
    out["notes"] = list(dict.fromkeys(notes))
    return out


def _headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Return ``{key: (shape, dtype)}`` for each ``.npy`` member, checking sizes before any load."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise DataError(
                        f"{path}: array {key} uses .npy format {version}, which mnistlab does not "
                        "read. Save it again with numpy.savez"
                    )
            if dtype.hasobject:
                raise DataError(
                    f"{path}: array {key} holds Python objects ({dtype}); mnistlab never loads "
                    "pickled data. Save numeric arrays (e.g. x.astype('uint8'))"
                )
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > MAX_BYTES:
                raise DataError(
                    f"{path}: array {key} declares shape {shape}, {nbytes:,} bytes: too large "
                    f"(mnistlab reads arrays of up to {MAX_BYTES:,} bytes). Use a smaller dataset "
                    "or split it"
                )
            if nbytes > info.file_size:
                raise DataError(
                    f"{path}: array {key} declares shape {shape} ({nbytes} bytes) but the archive "
                    f"holds {info.file_size} bytes for it. The file is corrupt: save it again"
                )
            out[key] = (shape, dtype)
    return out


def _float_scale(path: Path, arrays: dict, notes: list[str]) -> float:
    """Decide once, from train and test together, whether float images are 0..1 or 0..255."""
    floats = [arrays[k] for k in ("x_train", "x_test") if arrays[k].dtype.kind == "f"]
    if not floats:
        return 1.0
    for k in ("x_train", "x_test"):
        a = arrays[k]
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise DataError(
                f"{path}: {k} holds {bad} NaN or infinite value(s). Clean the data and save it "
                "again"
            )
    top = max(float(a.max()) for a in floats if a.size) if any(a.size for a in floats) else 0.0
    if top <= 1.0:
        notes.append("float images in 0..1 were scaled to 0..255 and rounded to uint8")
        return 255.0
    notes.append("float images in 0..255 were rounded to uint8")
    return 1.0


def images_uint8(x: np.ndarray, what: str, scale: float = 1.0, notes: list | None = None):
    """Return ``x`` as uint8 ``(N, H, W)`` 0-255, or raise DataError saying what is wrong.

    Args:
        x: integer or float array ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H*W)`` (square).
        what: names the array in messages (``file: key``).
        scale: factor for float data (255 for data in 0..1).
        notes: list that receives a note when the shape was changed.
    """
    notes = [] if notes is None else notes
    if x.dtype.kind not in "uif":
        raise DataError(
            f"{what}: images must be integers or floats; received dtype {x.dtype}. "
            "Save them as uint8 0-255"
        )
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    elif x.ndim == 2 and x.shape[1] > 0 and math.isqrt(x.shape[1]) ** 2 == x.shape[1]:
        side = math.isqrt(x.shape[1])
        x = x.reshape(len(x), side, side)
        notes.append(f"flat images of {side * side} pixels were reshaped to {side}x{side}")
    if x.ndim != 3:
        raise DataError(
            f"{what}: images must be (N, H, W), (N, H, W, 1) or (N, H*W) with H == W; "
            f"received shape {x.shape}"
        )
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise DataError(f"{what}: no images (shape {x.shape}). Use a non-empty dataset")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DataError(f"{what}: NaN or infinite pixel values. Clean the data")
        x = np.round(x.astype(np.float64) * scale)
    lo, hi = x.min(), x.max()
    if lo < 0 or hi > 255:
        raise DataError(
            f"{what}: pixel values must lie in 0..255 (or 0..1 for floats); received "
            f"{lo}..{hi}. Rescale the images"
        )
    return x.astype(np.uint8)


def labels_int64(y: np.ndarray, what: str, notes: list | None = None) -> np.ndarray:
    """Return ``y`` as int64 ``(N,)`` with values >= 0, or raise DataError.

    Args:
        y: integer or integral float array ``(N,)``, ``(N, 1)`` or one-hot ``(N, C)``.
        what: names the array in messages.
        notes: list that receives a note when one-hot labels were decoded.
    """
    notes = [] if notes is None else notes
    if y.dtype.kind not in "uifb":
        raise DataError(f"{what}: labels must be integers; received dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and y.shape[1] > 1 and len(y):
        finite = np.isfinite(y).all() if y.dtype.kind == "f" else True
        if not (finite and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise DataError(
                f"{what}: 2-D labels must be one-hot (one 1 per row); received shape {y.shape} "
                "with other values. Save integer labels (N,)"
            )
        y = y.argmax(axis=1)
        notes.append("one-hot labels were converted to class indices")
    if y.ndim != 1:
        raise DataError(f"{what}: labels must have shape (N,); received shape {y.shape}")
    if len(y) == 0:
        raise DataError(f"{what}: no labels. Use a non-empty dataset")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DataError(f"{what}: labels must be whole numbers; received non-integer floats")
    if y.min() < 0:
        raise DataError(
            f"{what}: labels must be class indices 0..num_classes-1; received {y.min()}..{y.max()}"
        )
    return y.astype(np.int64)
