"""Per-call control of numpy's OpenBLAS thread count.

``threadpoolctl`` sets limits process-wide with a few hundred microseconds of Python around each
change; the training loop wants two threads for its two big matrix products and one for everything
else, hundreds of times per second. ``Threads`` looks numpy's ``openblas_set_num_threads`` up once
and calls it directly (about 0.2 us).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Threads:
    """Switch numpy's OpenBLAS between one and ``most`` threads, and call its ``cblas_sgemm``.

    ``usable`` is False when numpy is not linked to a pthreads OpenBLAS (MKL, Accelerate, an
    OpenMP build) or the process has one core; ``set`` then does nothing and ``sub_product``
    falls back to numpy.
    """

    def __init__(self, most: int = 2):
        self.most = min(most, available_cores())
        self._set = self._sgemm = self._affinity = None
        self.sgemm_int64 = False  # does cblas_sgemm take 64-bit sizes (an ILP64 build)?
        import numpy as np
        from threadpoolctl import ThreadpoolController

        numpy_dir = Path(np.__file__).resolve().parent
        for lib in ThreadpoolController().lib_controllers:
            if lib.internal_api != "openblas" or lib.threading_layer != "pthreads":
                continue
            # numpy's own copy (numpy.libs/...), not scipy's or another package's
            path = Path(lib.filepath).resolve()
            if path.parent.parent != numpy_dir.parent or "numpy" not in path.parent.name:
                continue
            # A limit already in force (OPENBLAS_NUM_THREADS=1, threadpool_limits) is the user's
            # choice: the thread count changes only the speed, so respect it.
            self.most = min(self.most, lib.get_num_threads() or 1)
            self._set = _symbol(lib.dynlib, "openblas_set_num_threads")
            self._affinity = _symbol(lib.dynlib, "openblas_setaffinity")
            self._get = lib.get_num_threads
            sgemm = _symbol(lib.dynlib, "cblas_sgemm")
            if sgemm is not None:
                self.sgemm_int64 = sgemm.__name__.endswith("64_")
                index = ctypes.c_int64 if self.sgemm_int64 else ctypes.c_int
                i, f, p = index, ctypes.c_float, ctypes.c_void_p
                sgemm.argtypes = [ctypes.c_int] * 3 + [i] * 3 + [f, p, i, p, i, f, p, i]
                sgemm.restype = None
                self._sgemm = sgemm
            break

    @property
    def usable(self) -> bool:
        return self._set is not None and self.most > 1

    def set(self, n: int) -> None:
        if self._set is not None:
            self._set(n)

    @contextlib.contextmanager
    def single(self):
        """One BLAS thread inside the block, the previous count after it. Process-wide: another
        thread's products meanwhile run on one thread too (slower, never different)."""
        if self._set is None:
            yield
            return
        before = self._get()
        self.set(1)
        try:
            yield
        finally:
            self.set(before)

    @contextlib.contextmanager
    def pinned(self):
        """Keep the calling thread on the CPU it is on now and OpenBLAS' worker on another one;
        give both their CPU masks back afterwards.

        Measured on a 2-vCPU VM: left to the scheduler, two-thread epochs took 0.175 s or 0.245 s
        from one process start to the next (0.14-0.22 s inside ``mnistlab train``). Threads
        started meanwhile inherit the calling thread's pin, so keep the block to training steps.
        """
        try:
            mask = os.sched_getaffinity(0)
            cpu = ctypes.CDLL(None).sched_getcpu()
        except (AttributeError, OSError):  # not Linux/glibc
            yield
            return
        others = sorted(mask - {cpu})
        if cpu not in mask or not others or not self.usable:
            yield
            return
        os.sched_setaffinity(0, {cpu})
        pinned_worker = self._pin_worker({others[0]})
        try:
            yield
        finally:
            os.sched_setaffinity(0, mask)
            if pinned_worker:
                self._pin_worker(mask)

    def _pin_worker(self, cpus: set[int]) -> bool:
        """Set the CPU mask of OpenBLAS' first worker thread (index 0 with two threads)."""
        if self._affinity is None:
            return False
        bits = (ctypes.c_uint64 * 16)()  # a glibc cpu_set_t: 1,024 bits
        for c in cpus:
            if c < 1024:
                bits[c // 64] |= 1 << (c % 64)
        before = self._get()
        self.set(2)  # the worker index must be below the active thread count
        try:
            return self._affinity(0, ctypes.sizeof(bits), bits) == 0
        finally:
            self.set(before)

    @property
    def sgemm_address(self) -> int | None:
        """Where numpy's ``cblas_sgemm`` is in memory (for compiled code to call), or None."""
        if self._sgemm is None:
            return None
        return ctypes.cast(self._sgemm, ctypes.c_void_p).value

    def sub_product(self, a, b, c) -> None:
        """``c -= a.T @ b`` in one BLAS call (beta = 1); C-contiguous float32 ``a (k, m)``,
        ``b (k, n)``, ``c (m, n)``. Same bits as ``c -= a.T @ b``: each element is ``c`` minus
        the same float32 dot product."""
        k, m = a.shape
        n = b.shape[1]
        if self._sgemm is None or not (
            a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous
        ):
            c -= a.T @ b
            return
        # row-major (101), A transposed (112), B as is (111)
        self._sgemm(101, 112, 111, m, n, k, -1.0, a.ctypes.data, m, b.ctypes.data, n, 1.0,
                    c.ctypes.data, n)


def _symbol(dynlib, name: str):
    """``name`` in an OpenBLAS build, whose symbols may carry a prefix and a 64-bit suffix."""
    for prefix in ("", "scipy_"):
        for suffix in ("", "64_"):
            fn = getattr(dynlib, f"{prefix}{name}{suffix}", None)
            if fn is not None:
                return fn
    return None
