"""IDX files (the original MNIST format), raw or gzipped, read by parsing their header.

An IDX file is a 4-byte magic number ``0x0000TTNN`` (``TT`` = element type, ``NN`` = number of
dimensions), ``NN`` big-endian uint32 sizes, then the data. MNIST-style files are unsigned bytes:
labels have magic 2049 (``0x00000801``, one dimension) and images 2051 (``0x00000803``, three).
The reader checks the magic, the sizes and the exact length before it trusts a single byte.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np

from mnistlab.errors import DataError

LABELS_MAGIC = 2049
IMAGES_MAGIC = 2051
_KINDS = {"labels": (LABELS_MAGIC, 1), "images": (IMAGES_MAGIC, 3)}
# Larger than any MNIST-like set (EMNIST ByClass train images are 0.55 GB); stops a 20-byte header
# from asking for terabytes.
MAX_BYTES = 1 << 32
_CHUNK = 1 << 20

# Standard names, as published ("-idx3-ubyte") and as some unpackers write them (".idx3-ubyte").
PARTS = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def read_idx(path: str | os.PathLike, kind: str, sha256: str | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes.

    Args:
        path: the file, raw or gzipped (detected from its first bytes, not its name).
        kind: ``"images"`` (magic 2051) or ``"labels"`` (magic 2049).
        sha256: the file's verified sha256. A gzipped file is then unpacked once into
            ``unpacked_dir()`` under that name and read from there afterwards: 0.03 s instead of
            0.5 s for Fashion-MNIST's four files. The unpacked copy is checked like any IDX file
            and rebuilt if it does not pass.

    Returns:
        uint8 array ``(N, H, W)`` for images, ``(N,)`` for labels; read-only.

    Raises:
        DataError: unreadable file, wrong magic, bad sizes, wrong length or broken gzip.
    """
    path = Path(path)
    unpacked = unpacked_dir() / f"{sha256}-{kind}.idx" if sha256 else None
    if unpacked is not None and unpacked.is_file():
        try:
            return read_idx(unpacked, kind)
        except DataError:
            pass  # a damaged copy: unpack again
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            array = parse_idx(f, kind, name=str(path))
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}. Check the path") from None
    if unpacked is not None and gzipped:
        _keep_unpacked(unpacked, array, kind)
    return array


def unpacked_dir() -> Path:
    """Where gzipped IDX files are kept unpacked: ``$XDG_CACHE_HOME/mnistlab/unpacked``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnistlab" / "unpacked"


def _keep_unpacked(path: Path, array: np.ndarray, kind: str) -> None:
    """Write ``array`` as a raw IDX file at ``path`` (best effort: a read-only or full disk only
    means the next load unpacks again)."""
    from mnistlab.files import atomic_path

    header = np.array([_KINDS[kind][0], *array.shape], dtype=">u4").tobytes()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".idx", durable=False) as tmp, open(tmp, "wb") as f:
            f.write(header)
            f.write(array.tobytes())
    except OSError:
        pass


def parse_idx(f, kind: str, name: str = "<bytes>") -> np.ndarray:
    """Parse an IDX stream (raw or gzipped) from a binary file object; see ``read_idx``."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'images' or 'labels'; received {kind!r}")
    head = f.read(2)
    f.seek(0)
    if head == b"\x1f\x8b":
        try:
            return _parse(io.BytesIO(_gunzip(f)), kind, name, gzipped=True)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DataError(
                f"{name}: the gzip data is truncated or corrupt ({type(e).__name__}: {e}). "
                "Download the file again"
            ) from None
    return _parse(f, kind, name, gzipped=False)


def _parse(f, kind: str, name: str, gzipped: bool) -> np.ndarray:
    magic_expected, ndim_expected = _KINDS[kind]
    magic_bytes = _read_exact(f, 4)
    if len(magic_bytes) < 4:
        raise DataError(
            f"{name}: too short to be an IDX file ({len(magic_bytes)} bytes). "
            "Download the file again"
        )
    magic = int.from_bytes(magic_bytes, "big")
    if magic != magic_expected:
        other = {v[0]: k for k, v in _KINDS.items()}.get(magic)
        hint = (
            f"this is an IDX {other} file: pass the {kind} file instead"
            if other
            else "this is not an uint8 IDX file; check the file name and download it again"
        )
        raise DataError(
            f"{name}: wrong IDX magic number for {kind}: expected {magic_expected} "
            f"(0x{magic_expected:08x}); received {magic} (0x{magic:08x}). {hint}"
        )
    dims_bytes = _read_exact(f, 4 * ndim_expected)
    if len(dims_bytes) < 4 * ndim_expected:
        raise DataError(f"{name}: the IDX header is cut short. Download the file again")
    dims = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
    if dims[0] == 0:
        raise DataError(f"{name}: the IDX file holds no {kind} (count 0). Use a non-empty file")
    if any(d == 0 for d in dims[1:]):
        raise DataError(f"{name}: image size {dims[1]}x{dims[2]} is empty. Fix the IDX header")
    size = int(np.prod(dims, dtype=object))
    if size > MAX_BYTES:
        raise DataError(
            f"{name}: the IDX header declares {dims}, {size} bytes, over the {MAX_BYTES}-byte "
            "limit. The header is probably corrupt: download the file again"
        )
    header = 4 + 4 * ndim_expected
    if not gzipped:
        total = os.fstat(f.fileno()).st_size if _has_fileno(f) else None
        if total is not None and total != header + size:
            raise DataError(_length_message(name, dims, size, total - header))
        if total is not None:  # the file holds exactly the data: read it into the array
            return _read_into(f, size, name, dims).reshape(dims)
    data = _read_exact(f, size + 1)
    if len(data) != size:
        raise DataError(_length_message(name, dims, size, len(data), more=len(data) > size))
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _gunzip(f) -> bytes:
    """A gzip stream's content (every member, as ``gzip`` reads it) in one zlib call per member:
    without the ``GzipFile`` loop, 0.25 s less for Fashion-MNIST. Reads at most ``MAX_BYTES``
    plus one of output, so a bomb cannot exhaust memory (the parser then reports the length)."""
    raw, out, total = f.read(), [], 0
    while raw:
        d = zlib.decompressobj(wbits=31)
        out.append(d.decompress(raw, MAX_BYTES + 64 - total))
        total += len(out[-1])
        if d.unconsumed_tail:  # over the limit: what was read is enough to refuse it
            break
        if not d.eof:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        raw = d.unused_data.lstrip(b"\x00")  # gzip allows zero padding between members
    return b"".join(out)


def _length_message(name, dims, size, got, more=None):
    more = got > size if more is None else more
    what = "has extra bytes after the data" if more else "is truncated"
    got_text = f"more than {size}" if more and got == size + 1 else str(got)
    return (
        f"{name}: the file {what}: the header declares {dims}, {size} data bytes; "
        f"received {got_text}. Download the file again"
    )


def _has_fileno(f) -> bool:
    try:
        f.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return False
    return True


def _read_into(f, size: int, name: str, dims) -> np.ndarray:
    """``size`` bytes of ``f`` straight into a new array (no chunks to join: 0.05 s less for
    Fashion-MNIST's training images); the caller checked that the file holds that many."""
    data = np.empty(size, np.uint8)
    view, got = memoryview(data), 0
    while got < size:
        n = f.readinto(view[got:])
        if not n:  # shrank since it was measured
            raise DataError(_length_message(name, dims, size, got))
        got += n
    data.flags.writeable = False  # as ``np.frombuffer`` gives it for the other files
    return data


def _read_exact(f, n: int) -> bytes:
    """Read up to ``n`` bytes in chunks, so a lying header cannot make us allocate ``n`` at once."""
    parts = []
    left = n
    while left > 0:
        block = f.read(min(left, _CHUNK))
        if not block:
            break
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def find_idx_files(directory: str | os.PathLike) -> dict[str, Path]:
    """Return the standard IDX files present in ``directory``, keyed x_train/y_train/x_test/y_test.

    Each name may also end in ``.gz``. Missing parts are simply absent from the result.
    """
    directory = Path(directory)
    found = {}
    for part, names in PARTS.items():
        for base in names:
            for candidate in (directory / base, directory / f"{base}.gz"):
                if candidate.is_file():
                    found.setdefault(part, candidate)
    return found


def read_idx_dir(directory: str | os.PathLike, max_label: int | None = 9) -> dict[str, np.ndarray]:
    """Read the four standard IDX files of ``directory``.

    Args:
        directory: holds ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.
        max_label: largest allowed label (9 for MNIST-like sets); ``None`` allows 0..255.

    Returns:
        ``{"x_train": uint8 (N, H, W), "y_train": int64 (N,), "x_test": uint8 (M, H, W),
        "y_test": int64 (M,), "files": {part: Path}}``.

    Raises:
        DataError: a file is missing or invalid, counts disagree, or labels are out of range.
    """
    files = find_idx_files(directory)
    missing = [PARTS[p][0] for p in PARTS if p not in files]
    if missing:
        raise DataError(
            f"{directory}: missing IDX file(s) {', '.join(missing)} (optionally .gz). "
            "Put all four standard files in the folder"
        )
    return read_idx_files(files, max_label=max_label)


def read_idx_files(files: dict[str, Path], max_label: int | None = 9,
                   sha256: dict[str, str] | None = None) -> dict:
    """Read and cross-check the four IDX files in ``files``; see ``read_idx_dir``. ``sha256``:
    the verified sha256 of each part, to read gzipped files unpacked once (``read_idx``)."""
    out: dict = {"files": files}
    sha = sha256 or {}
    for split in ("train", "test"):
        x = read_idx(files[f"x_{split}"], "images", sha.get(f"x_{split}"))
        y = read_idx(files[f"y_{split}"], "labels", sha.get(f"y_{split}")).astype(np.int64)
        if len(x) != len(y):
            raise DataError(
                f"{files[f'x_{split}']} holds {len(x)} images but {files[f'y_{split}']} holds "
                f"{len(y)} labels. Use matching files"
            )
        if max_label is not None and y.max() > max_label:
            bad = int(np.count_nonzero(y > max_label))
            raise DataError(
                f"{files[f'y_{split}']}: {bad} label(s) above {max_label} (largest {y.max()}). "
                "Labels must be 0..9: check this is the right labels file"
            )
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise DataError(
            f"train images are {out['x_train'].shape[1:]} but test images are "
            f"{out['x_test'].shape[1:]}. Use train and test files of one dataset"
        )
    return out

