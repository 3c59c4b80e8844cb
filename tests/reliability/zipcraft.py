"""Build zip files by hand, for bombs: members whose deflate data is given, sizes declared at will."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def zeros_deflate(n_mib: int) -> tuple[bytes, int]:
    """Return ``(raw deflate data, crc32)`` of ``n_mib`` MiB of zero bytes, made in well under a
    second: one MiB is compressed once with a full flush (so it stands alone) and repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    crc, mib = 0, b"\0" * (1 << 20)
    for _ in range(n_mib):
        crc = zlib.crc32(mib, crc)
    return block * n_mib + end, crc


def write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """Write a zip of ``(name, data, method, crc32, declared uncompressed size)`` members
    (method 0 = stored, 8 = deflate). Sizes must stay below 4 GiB (no zip64)."""
    local, central = bytearray(), bytearray()
    for name, data, method, crc, size in members:
        raw = name.encode()
        offset = len(local)
        local += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data),
                             size, len(raw), 0) + raw + data
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc,
                               len(data), size, len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central),
                      len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path
