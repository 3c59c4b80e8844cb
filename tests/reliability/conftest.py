"""Fixture for the reliability tests: a real small filesystem (tmpfs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture
def small_fs(tmp_path):
    """Yield a function that mounts a real tmpfs of a given size (and inode count).

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
