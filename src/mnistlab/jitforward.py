"""A Dense network's forward pass as compiled code on up to two threads, for big batches.

Used for ``fit_fast``'s per-epoch validation (``mnistlab.jitloop``) and for
``Predictor.predict_proba`` on large batches (``mnistlab.inference``). The rows are cut into
chunks of ``CHUNK``; each chunk's pixels are converted to float32 into a scratch that stays in
cache for the first product, and both halves of the batch (split at a chunk boundary) run at
once, one on the calling thread and one on a helper thread, the BLAS on one thread each.
Measured on 10,000 uint8 Fashion-MNIST images through the tutorial's network (2-vCPU VM):
9.7-10.5 ms, against 12.6-13.6 ms for numpy with two OpenBLAS threads in the same process.

Two Python threads rather than OpenMP: the GIL is released inside, the hand-off costs tens of
microseconds against ~10 ms of work, calls from many threads at once are safe, and a forked
child (a server's worker) starts its own helper.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK = 512  # rows converted and multiplied at a time (measured best of 128-1024)

_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _helper_thread() -> ThreadPoolExecutor:
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(1, thread_name_prefix="mnistlab-forward")
        return _helper


def _forget_helper() -> None:  # in a forked child the helper thread does not exist
    global _helper, _helper_lock
    _helper, _helper_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helper)


class Forward:
    """Probabilities of float32 or uint8 rows through Dense layers ending in a softmax.

    ``w_flat``, ``layout`` and ``acts`` as in ``mnistlab.jitkernels`` (the flat buffer is used
    as it is, not copied: a training loop's updates show).
    """

    def __init__(self, w_flat: np.ndarray, layout: np.ndarray, acts: np.ndarray):
        from mnistlab import jitkernels  # ImportError without numba or numpy's OpenBLAS

        self._kernel = jitkernels.forward_rows
        self.w_flat, self.layout, self.acts = w_flat, layout, acts

    @classmethod
    def from_layers(cls, layers) -> Forward:
        """From ``(kernel (in, out), bias (out,) or None, activation name)`` per Dense layer, the
        last one a softmax. Raises KeyError for an activation the compiled code lacks, and
        ImportError without numba or numpy's OpenBLAS."""
        from mnistlab.jitkernels import ACTIVATIONS

        parts, rows, off = [], [], 0
        for kernel, bias, _ in layers:
            rows.append([off, *kernel.shape, -1 if bias is None else off + kernel.size])
            parts.append(np.asarray(kernel, np.float32).ravel())
            off += kernel.size
            if bias is not None:
                parts.append(np.asarray(bias, np.float32))
                off += bias.size
        acts = [ACTIVATIONS[a] for _, _, a in layers[:-1]] + [0]
        return cls(np.concatenate(parts), np.array(rows, np.int64), np.array(acts, np.int64))

    def __call__(self, x: np.ndarray, scale: float, two: bool) -> np.ndarray:
        """Probabilities ``(N, C)`` of C-contiguous rows ``x`` (float32 or uint8), each value
        times ``scale`` first. ``two``: run the second half on the helper thread. The BLAS must
        be on one thread (``fit_fast`` sees to that; ``Predictor`` sets it)."""
        out = np.empty((len(x), self.layout[-1, 2]), np.float32)
        args = (np.float32(scale), self.w_flat, self.layout, self.acts, CHUNK)
        half = -(-len(x) // 2 // CHUNK) * CHUNK if two else len(x)
        if 0 < half < len(x):
            rest = _helper_thread().submit(self._kernel, x[half:], *args, out[half:])
            self._kernel(x[:half], *args, out[:half])
            rest.result()
        elif len(x):
            self._kernel(x, *args, out)
        return out
