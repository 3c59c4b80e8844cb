"""Shared helpers for the reliability tests: the real console script and a real small filesystem."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MNISTLAB = str(Path(sys.executable).parent / "mnistlab")
ENV = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONUNBUFFERED": "1"}


def temp_leftovers(root: Path) -> list[str]:
    """Every temporary file an atomic write could leave behind under ``root`` (recursively)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp*"))


@pytest.fixture
def small_fs(tmp_path):
    """Mount a real tmpfs of a given size and return a function that mounts it.

    ``small_fs("1m")`` returns the mount point; it is unmounted after the test. Skips when the
    test is not allowed to mount (not root, or no CAP_SYS_ADMIN in a container).
    """
    mounted: list[Path] = []

    def mount(size: str, inodes: int | None = None) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no `mount` command: cannot make a real small filesystem")
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        opts = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


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
