"""Decide a model file's container (zip or HDF5) the way Keras will read it, and bound the zip.

Keras picks the reader from the file name and ``zipfile.is_zipfile``, which finds a zip at the
*end* of a file. So ``cat legit.h5 other.keras > x.keras`` is an HDF5 file to a reader that looks
at the first bytes and a zip to Keras. mnistlab therefore refuses files that are both, files with
leading or trailing data, and files whose content does not match the reader their name selects.

Zip members are checked before anything is decompressed: each member's declared size, the total,
and the compression ratio; reads are streamed with a cap. The caps are sized from the largest
models mnistlab makes, with a wide margin:

- ``config.json`` of the largest model the configuration allows (16 hidden layers with dropout,
  functional API) is about 20 KB; any Keras config mnistlab can load is far below 4 MiB.
- the tutorial's weights are 0.35 MB; a 784-4096-4096-4096-10 MLP, far beyond anything mnistlab's
  presets make, is 150 MB. Weights above 512 MiB are refused.
- Keras stores members uncompressed (ratio 1); a member expanding over 100 times its stored size
  (and over 1 MiB) is a decompression bomb.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

from mnistlab.errors import ModelError

MAX_CONFIG_BYTES = 4 << 20
MAX_MEMBER_BYTES = 512 << 20
MAX_TOTAL_BYTES = 600 << 20
MAX_RATIO = 100
RATIO_FLOOR = 1 << 20  # small members (config.json of a few KB) may compress well

H5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"
_ZIP_END_SIZE = 22


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def _h5_superblock_offsets(size: int):
    """Where HDF5 looks for its signature: 0, 512, 1024, 2048, ... (a user block may precede it)."""
    yield 0
    offset = 512
    while offset + 8 <= size:
        yield offset
        offset *= 2


def _h5_end(f, size: int) -> tuple[int | None, int | None]:
    """Return ``(offset of the HDF5 signature, end-of-file address)`` or ``(None, None)``."""
    for offset in _h5_superblock_offsets(size):
        f.seek(offset)
        head = f.read(48)
        if head[:8] != H5_MAGIC:
            continue
        version = head[8] if len(head) > 8 else -1
        if version in (0, 1):
            width, base = head[13], 24 if version == 0 else 28
            fields = 2  # base address and free-space address come before the end-of-file address
        elif version in (2, 3):
            width, base, fields = head[9], 12, 2  # base address, superblock extension address
        else:
            return offset, None
        if width not in (2, 4, 8):
            return offset, None
        start = base + fields * width
        if len(head) < start + width:
            return offset, None
        fmt = {2: "<H", 4: "<I", 8: "<Q"}[width]
        base_address = struct.unpack(fmt, head[base:base + width])[0]
        eof = struct.unpack(fmt, head[start:start + width])[0]
        return offset, base_address + eof
    return None, None


def _zip_end(f, size: int) -> int | None:
    """Return where the zip's end record (with its comment) ends, or ``None`` if there is none."""
    tail_len = min(size, _ZIP_END_SIZE + 0xFFFF)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(_ZIP_END)
    while at >= 0:
        if at + _ZIP_END_SIZE <= len(tail):
            comment = struct.unpack("<H", tail[at + 20:at + 22])[0]
            return size - tail_len + at + _ZIP_END_SIZE + comment
        at = tail.rfind(_ZIP_END, 0, at)
    return None


def container(path: Path) -> str:
    """Return ``"zip"`` or ``"h5"``: what Keras will read ``path`` as, checked against the content.

    Raises:
        ModelError: the file is both a zip and an HDF5 file, has data before or after the one it
            is, is neither, or its name selects a reader that does not fit its content.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        h5_at, h5_end = _h5_end(f, size)
        zip_end = _zip_end(f, size)
    is_zip = zipfile.is_zipfile(path) or head[:4] == _ZIP_LOCAL
    if h5_at is not None and is_zip:
        raise ModelError(
            f"refusing to load {path}: it is both an HDF5 file and a zip archive (a polyglot, e.g. "
            "two model files joined together), so what is checked may not be what Keras loads. "
            "Re-save the model with model.save('model.keras')"
        )
    if is_zip:
        kind = "zip"
        if head[:4] != _ZIP_LOCAL:
            raise ModelError(f"refusing to load {path}: it has data before its zip archive. "
                             "Re-save the model with model.save('model.keras')")
        if zip_end is not None and zip_end != size:
            raise ModelError(f"refusing to load {path}: it has {size - zip_end:,} bytes of data after "
                             "its zip archive. Re-save the model or copy the file again")
    elif h5_at is not None:
        kind = "h5"
        if h5_at != 0:
            raise ModelError(f"refusing to load {path}: it has {h5_at:,} bytes of data before its "
                             "HDF5 content. Re-save the model with model.save('model.h5')")
        if h5_end is not None and h5_end < size:
            raise ModelError(f"refusing to load {path}: it has {size - h5_end:,} bytes of data after "
                             "its HDF5 content. Re-save the model or copy the file again")
    else:
        return "unknown"
    _check_name(path, kind)
    return kind


def _check_name(path: Path, kind: str) -> None:
    """Keras chooses its reader from the name: ``.keras`` needs a zip, ``.h5``/``.hdf5`` HDF5."""
    suffix = path.suffix.lower()
    wanted = {".keras": "zip", ".h5": "h5", ".hdf5": "h5"}.get(suffix)
    if wanted == kind:
        return
    right = ".keras" if kind == "zip" else ".h5"
    what = "a zip (.keras) file" if kind == "zip" else "an HDF5 (.h5) file"
    raise ModelError(
        f"{path} is {what} but its name ends in {suffix or '(no extension)'!r}; Keras chooses how "
        f"to read a model from its name. Rename it to end in {right}"
    )


def check_zip_members(z: zipfile.ZipFile, path: Path) -> None:
    """Refuse a zip whose members, declared sizes or compression ratios exceed the caps.

    Raises:
        ModelError: naming the member, its declared size and the cap.
    """
    total = 0
    for info in z.infolist():
        cap = MAX_CONFIG_BYTES if info.filename.endswith(".json") else MAX_MEMBER_BYTES
        if info.file_size > cap:
            raise ModelError(
                f"refusing to load {path}: member {info.filename[:100]!r} declares "
                f"{info.file_size:,} bytes uncompressed, over mnistlab's limit of {_mib(cap)} for "
                "it. A model mnistlab can use is far smaller; this looks like a decompression bomb"
            )
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ModelError(
                f"refusing to load {path}: member {info.filename[:100]!r} expands from "
                f"{info.compress_size:,} to {info.file_size:,} bytes, over the limit of "
                f"{MAX_RATIO}x; this looks like a decompression bomb. Keras stores model files "
                "uncompressed: re-save the model with model.save"
            )
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise ModelError(
            f"refusing to load {path}: its members add up to {total:,} bytes uncompressed, over "
            f"mnistlab's limit of {_mib(MAX_TOTAL_BYTES)}"
        )


def read_member(z: zipfile.ZipFile, name: str, cap: int, path: Path) -> bytes:
    """Read one zip member in chunks, stopping with ``ModelError`` once it passes ``cap`` bytes."""
    chunks, n = [], 0
    with z.open(name) as f:
        while chunk := f.read(1 << 16):
            n += len(chunk)
            if n > cap:
                raise ModelError(
                    f"refusing to load {path}: member {name!r} is larger than its declared size "
                    f"and over mnistlab's limit of {_mib(cap)}"
                )
            chunks.append(chunk)
    return b"".join(chunks)


def verify_members(z: zipfile.ZipFile, path: Path) -> str | None:
    """Check every member's CRC by streaming it (bounded memory); return the first bad name."""
    for info in z.infolist():
        n = 0
        try:
            with z.open(info) as f:
                while chunk := f.read(1 << 20):
                    n += len(chunk)
                    if n > info.file_size:
                        return info.filename
        except zipfile.BadZipFile:  # zipfile checks the CRC when a member has been read to its end
            return info.filename
    return None
