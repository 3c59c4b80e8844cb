"""Compile the training kernels in a background process, so that nobody waits for the compiler.

numba compiles ``engine.kernels`` once per machine (about 25 s of one core; later processes load
the machine code from the cache in a fraction of a second). ``start()`` runs that compilation in
a separate, low-priority process (``python -m mnistlab.engine.warm``) and returns a handle whose
``ready()`` says when the cache is complete; meanwhile ``JitLoop`` trains on the numpy copy of the
kernels (``engine.replica``, the same bits) and switches at the next epoch boundary. The process
outlives its parent if it must: the next run finds the cache complete. ``make run`` and
``make test`` start it right after installing.

A lock file in the cache folder keeps two such processes from compiling the same thing at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

LOCK = "warming.lock"


def _lock_path() -> Path:
    from mnistlab.engine import kernels

    folder = Path(kernels.load().numba.config.CACHE_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / LOCK


def _locked(path: Path) -> bool:
    """Is another process holding the compile lock now?"""
    from mnistlab.runlock import lock_held

    return bool(lock_held(path))


def compiling() -> bool:
    """Is a background compilation running now (in any process)?"""
    return _locked(_lock_path())


class Warming:
    """A background compilation: ``ready()`` once the training kernels are all cached."""

    def __init__(self, pid: int | None, lock: Path):
        self.pid, self.lock = pid, lock
        self._ready = False

    def ready(self) -> bool:
        if self._ready:
            return True
        from mnistlab.engine import kernels

        if self.pid is not None:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0] == 0:
                    return False  # still compiling
            except ChildProcessError:
                pass  # already reaped
            self.pid = None
        elif _locked(self.lock):  # another process's compilation
            return False
        self._ready = kernels.compiled_before()
        return self._ready


def start() -> Warming:
    """Start compiling the training kernels in the background (unless another process already
    is); return the handle to poll. The process runs in its own session, so it outlives the
    caller if it must (the next run then finds the cache complete)."""
    lock = _lock_path()
    if _locked(lock):
        return Warming(None, lock)
    from mnistlab.engine import kernels

    env = {**os.environ, "NUMBA_CACHE_DIR": kernels.load().numba.config.CACHE_DIR}
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "mnistlab.engine.warm"], env,
                         file_actions=quiet, setsid=True)
    return Warming(pid, lock)


def compile_all() -> None:
    """Compile (or load) every kernel ``mnistlab train`` calls, with the argument types it uses,
    by running them on a tiny network."""
    from mnistlab.engine.jit_loop import JitLoop

    rng = np.random.default_rng(0)
    plan = [
        SimpleNamespace(kernel=rng.standard_normal((16, 8), np.float32), activation="relu",
                        bias=np.zeros(8, np.float32), dropout=0.0),
        SimpleNamespace(kernel=rng.standard_normal((8, 4), np.float32), activation="softmax",
                        bias=np.zeros(4, np.float32), dropout=0.0),
    ]
    sgd = SimpleNamespace(learning_rate=0.01, momentum=0.0, nesterov=False, momentums=[])
    loop = JitLoop(plan, sgd, 4, 16, 10, compile_now=True)
    x = rng.integers(0, 256, (10, 16), dtype=np.uint8)
    y = np.arange(10) % 4
    for two in (True, False):
        loop.two = two
        loop._run(x, y, np.arange(10), None, two)
    for rows in (x, x.astype(np.float32)):  # validation (float32) and Predictor (uint8)
        loop.predict(rows)
    from mnistlab.engine import kernels

    kernels.mark_compiled()


def main() -> None:
    with contextlib.suppress(OSError):
        os.nice(10)
    try:
        lock = _lock_path()
    except ImportError as e:  # no numba or no OpenBLAS: training uses the numpy loop
        print(f"mnistlab: nothing to compile ({e}); training will use the numpy loop")
        return
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # waits for another compilation to finish
        compile_all()


if __name__ == "__main__":
    main()
