"""Who is training a run right now: a lock file held by the training process.

A manifest that says ``running`` only tells what the last write recorded; a process killed by
SIGKILL (or the machine going down) cannot update it, and a bare PID can be reused by an unrelated
process. So the training process holds an exclusive ``flock`` on ``RUN/.run.lock`` for as long as
it trains; the kernel drops the lock the moment the process ends, however it ends. A run whose
manifest says ``running`` but whose lock nobody holds is reported as ``interrupted``.

``flock`` locks belong to an open file description, not to a process: a second open of the lock
file, even in the training process itself, sees the lock as held, and closing it does not release
the trainer's lock (``fcntl`` record locks would be released by any close in the process).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
from pathlib import Path

from mnistlab.errors import RunError, shorten

LOCK_FILE = ".run.lock"
# What mnistlab.files.atomic_path names its temporary files: .NAME.<8 hex>.tmp[suffix]
_TEMP = re.compile(r"\..+\.[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?")


class RunLock:
    """An exclusive lock on a run directory, held until ``release`` or the end of the process."""

    def __init__(self, fd: int):
        self._fd: int | None = fd

    @classmethod
    def create(cls, run_dir: Path) -> RunLock:
        """Lock a new run directory: the lock file appears already locked (temp, lock, rename).

        Raises:
            DiskFullError: no inode or space left; RunError: the folder is not writable.
        """
        tmp = run_dir / f"{LOCK_FILE}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise _lock_error(run_dir, e) from None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(tmp, run_dir / LOCK_FILE)
        return cls(fd)

    @classmethod
    def take(cls, run_dir: Path) -> RunLock | None:
        """Lock an existing run directory; ``None`` when a live process holds it."""
        try:
            fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise _lock_error(run_dir, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _lock_error(run_dir: Path, e: OSError) -> Exception:
    from mnistlab.files import DiskFullError

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on the device while writing {run_dir / LOCK_FILE}. "
                             "Free some disk space and retry; earlier files were left intact")
    return RunError(f"cannot write the lock file {shorten(str(run_dir / LOCK_FILE))} "
                    f"({e.strerror}). Make the run directory writable")


def is_held(run_dir: Path) -> bool | None:
    """True while a live process trains the run, False if nobody does, None for runs made before
    lock files existed (no lock file)."""
    return lock_held(run_dir / LOCK_FILE)


def lock_held(path: Path) -> bool | None:
    """True while some process holds an exclusive ``flock`` on ``path``, False if none does, None
    when the file is missing or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return False


def live_status(run_dir: Path, recorded: str, pid=None) -> str:
    """The status to show: a recorded ``running`` with no live trainer is ``interrupted``."""
    if recorded != "running":
        return recorded
    held = is_held(run_dir)
    if held is None:  # an older run: fall back to its pid (may be reused, but it is all there is)
        held = isinstance(pid, int) and _pid_alive(pid)
    return "running" if held else "interrupted"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def remove_leftovers(run_dir: Path) -> list[str]:
    """Delete the hidden temporary files a killed write left in ``run_dir``; return their names.

    Only call this while holding the run's lock: then no other process is writing there.
    """
    gone = []
    for p in run_dir.iterdir():
        if _TEMP.fullmatch(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p.name)
    return sorted(gone)


class RunGuard:
    """Hold a run's lock while training, and record how it ended if it ended by an error.

    Used as ``with RunGuard() as guard:`` around training; ``guard.hold(run)`` once the run
    directory exists. An exception that leaves the manifest at ``running`` (a full disk, a
    damaged file, a bug) is recorded as ``failed`` with the error, as far as the disk allows.
    """

    def __init__(self):
        self.run = None
        self.lock: RunLock | None = None

    def __enter__(self) -> RunGuard:
        return self

    def hold(self, run, *, new: bool) -> None:
        """Lock ``run`` (a ``mnistlab.runs.Run``); on resume, refuse a run a live process holds."""
        if new:
            self.lock = RunLock.create(run.path)
        else:
            self.lock = RunLock.take(run.path)
            if self.lock is None:
                raise RunError(f"run {run.path} is still being trained by process "
                               f"{run.manifest.get('pid', '?')}; wait or stop it")
            remove_leftovers(run.path)
        self.run = run

    def __exit__(self, kind, exc, tb) -> bool:
        try:
            if exc is not None and self.run is not None and self.run.manifest.get("status") == "running":
                self._record(exc)
        finally:
            if self.lock is not None:
                self.lock.release()
        return False

    def _record(self, exc: BaseException) -> None:
        import datetime as dt

        from mnistlab.errors import MnistlabError

        stopped = isinstance(exc, KeyboardInterrupt)
        # If the disk is full or gone, the released lock still shows the run is not live.
        with contextlib.suppress(OSError, MnistlabError):
            self.run.update(
                status="interrupted" if stopped else "failed",
                error=None if stopped else f"{type(exc).__name__}: {shorten(str(exc), 300)}",
                finished=None if stopped else dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            )
