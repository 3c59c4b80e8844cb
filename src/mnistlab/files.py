"""Atomic file writes: a temporary name in the same folder, then ``os.replace``.

A crash or a full disk never leaves a half-written artifact and never destroys the previous good
file: the old file stays in place until the new one is complete on disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from mnistlab.errors import MnistlabError


class DiskFullError(MnistlabError, OSError):
    """Writing failed because the disk (or quota) is full."""


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "", durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    Args:
        path: the final file.
        suffix: extension the temporary name must end with (Keras insists on ``.keras``/``.h5``).
        durable: fsync before the rename, so the file survives a power cut too. Files rewritten
            every epoch (checkpoint, history, manifest) skip it: the rename alone already makes
            them crash-safe, and an fsync per file costs milliseconds per epoch.

    Raises:
        DiskFullError: the disk filled up; the temporary file is removed, ``path`` is untouched.
    """
    path = Path(path)
    tmp = None
    try:
        tmp = _create_temp(path, suffix)
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"no space left on the device while writing {path}. Free some disk space and "
                "retry; earlier files were left intact"
            ) from None
        raise
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def _create_temp(path: Path, suffix: str) -> Path:
    """Create an empty, hidden temporary file next to ``path``.

    Unlike ``tempfile.mkstemp`` (always 0o600), the mode is 0o666 minus the umask, so the final
    file gets the same permissions a plain ``open(path, "w")`` would give it.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"could not create a temporary file next to {path}")


def write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path`` for ``durable``)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str, durable: bool = True) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | Path, obj, durable: bool = True) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", durable=durable)


def save_npz(path: str | Path, compress: bool = True, durable: bool = True, **arrays) -> None:
    """Save arrays as an ``.npz`` atomically, as ``numpy.savez`` does, but compressed (unless
    ``compress=False``) at zlib level 1: a run's test images (7.8 MB) took 0.21 s at numpy's level
    6 and take 0.13 s, 3 % larger.

    Args:
        path: the final file.
        compress: deflate the members.
        durable: flush the file to disk before it replaces ``path``.
        arrays: name -> array, or a ``concurrent.futures.Future`` of one: the members are written
            in the order given, each future waited for when its turn comes (so the arrays known
            first are compressed while the others are still being computed).
    """
    import zipfile

    import numpy as np

    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with (atomic_path(path, suffix=".npz", durable=durable) as tmp,
          zipfile.ZipFile(tmp, "w", method, allowZip64=True, compresslevel=1) as zf):
        for name, value in arrays.items():
            value = value.result() if hasattr(value, "result") else value
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def save_with(
    path: str | Path, writer: Callable[[Path], None], suffix: str = "", stage_in_memory: bool = False
) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically.

    Args:
        path: the final file.
        writer: writes the complete file to the path it is given.
        suffix: extension the temporary name must end with.
        stage_in_memory: let ``writer`` write into a RAM-backed folder (``/dev/shm`` when there is
            one) and copy the result into place. For writers that cannot cope with a full disk:
            HDF5 (``.h5``) can crash the whole process on ENOSPC instead of raising.

    Raises:
        DiskFullError: the disk filled up; ``path`` is untouched.
    """
    if not stage_in_memory:
        with atomic_path(path, suffix=suffix) as tmp:
            writer(tmp)
        return
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        staged = Path(folder) / f"staged{suffix}"
        writer(staged)
        with atomic_path(path, suffix=suffix) as tmp, open(staged, "rb") as src, \
                open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_npz(path: str | Path, keys: Sequence[str] | None = None) -> dict:
    """Read arrays of an ``.npz`` into a dict and close the file, never unpickling.

    The one ``.npz`` reader of the package: ``allow_pickle=False``, and the file handle is closed
    even when the archive is damaged.

    Args:
        path: the ``.npz`` file.
        keys: the arrays to read (default: all of them).

    Returns:
        ``{name: array}``.

    Raises:
        OSError: the file is missing or unreadable. zipfile.BadZipFile: a damaged archive.
        ValueError: not an ``.npz`` archive, pickled objects, or one of ``keys`` is missing (the
            message names it).
    """
    import numpy as np

    # Open the file ourselves: np.load leaks its handle when the zip inside is unreadable.
    with open(path, "rb") as f:
        data = np.load(f, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} is a single .npy array, not an .npz archive")
        with data:
            return _arrays(path, data, keys)


def _arrays(path, data, keys: Sequence[str] | None) -> dict:
    """The arrays ``keys`` (all when None) of an open ``NpzFile``."""
    missing = [k for k in keys or () if k not in data.files]
    if missing:
        raise ValueError(
            f"{path} lacks the array(s) {', '.join(missing)}; it holds {sorted(data.files)}"
        )
    return {k: data[k] for k in (data.files if keys is None else keys)}
