"""Helpers shared by the reliability tests: the real console script, leftover temp files, filling a disk."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

MNISTLAB = str(Path(sys.executable).parent / "mnistlab")
ENV = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONUNBUFFERED": "1"}


def temp_leftovers(root: Path) -> list[str]:
    """Every temporary file an atomic write could leave behind under ``root`` (recursively)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp*"))


def fill(point: Path, leave: int = 0) -> Path:
    """Fill the filesystem at ``point`` with one file, leaving about ``leave`` bytes free.

    Returns:
        The filler file (delete it to free the space again).
    """
    filler = point / "filler.bin"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * (1 << 16)
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    if leave:
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - leave))
    return filler
