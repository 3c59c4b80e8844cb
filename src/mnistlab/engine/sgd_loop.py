"""What the plain-SGD training loops share: the flat parameter buffers, Keras SGD's momentum
state, the per-epoch bookkeeping and the choice between one and two threads.

``NumpyLoop`` (``engine.numpy_loop``) and ``JitLoop`` (``engine.jit_loop``) each implement
``_run`` (one epoch of steps) and ``predict``; their results never depend on the thread setting,
so the setting may be chosen by speed alone.
"""

from __future__ import annotations

import math
import time

import numpy as np

from mnistlab.engine.loss import HI, LO


def _numpy(v):
    """A Keras variable or tensor, or a numpy array or number, as numpy (Keras imported only for
    the former: a loop built from numpy arrays does not need it)."""
    if isinstance(v, np.ndarray | np.generic | float | int):
        return np.asarray(v)
    import keras

    return keras.ops.convert_to_numpy(v)


class SgdLoop:
    """Keras SGD (optionally with momentum / Nesterov) on float32 numpy parameters."""

    # Do two-thread epochs check themselves against the one-thread rate as they go (``JitLoop``)?
    # Then, while two threads are the faster, one is looked at again on an epoch's first steps
    # (``sample_one``) rather than on a whole epoch.
    GUARDED = False

    def __init__(self, plan, optimizer, batch_size: int, n_train: int, two_usable: bool,
                 forced: int | None = None):
        """``forced``: 1 or 2 threads every epoch (where two are usable) instead of measuring."""
        self.plan, self.optimizer, self.bs = plan, optimizer, batch_size
        self.vars = [v for d in plan for v in (d.kernel, d.bias) if v is not None]
        sizes = [math.prod(v.shape) for v in self.vars]
        # One flat buffer per kind: the update is one vector op whatever the depth.
        self.w_flat = np.empty(sum(sizes), np.float32)
        self.g_flat = np.empty(sum(sizes), np.float32)
        self.w, self.b, self.gw, self.gb = [], [], [], []  # per Dense layer: views into the flats
        self.offsets = []  # per Dense layer: where its kernel and bias start (-1: no bias)
        off = 0
        for d in plan:
            starts = []
            for v, ws, gs in ((d.kernel, self.w, self.gw), (d.bias, self.b, self.gb)):
                starts.append(off if v is not None else -1)
                if v is None:
                    ws.append(None)
                    gs.append(None)
                    continue
                size = math.prod(v.shape)
                ws.append(self.w_flat[off : off + size].reshape(v.shape))
                gs.append(self.g_flat[off : off + size].reshape(v.shape))
                ws[-1][...] = _numpy(v)
                off += size
            self.offsets.append(tuple(starts))

        self.lr = float(_numpy(optimizer.learning_rate))
        self.mom = np.float32(optimizer.momentum)
        self.nesterov = bool(optimizer.nesterov)
        self.m_flat = None
        if optimizer.momentum:
            self.m_flat = np.concatenate(
                [_numpy(m).ravel() for m in optimizer.momentums]
            ).astype(np.float32)

        self.pt = np.empty(n_train, np.float32)  # each sample's true-class probability
        self.pred = np.empty(n_train, np.intp)  # and predicted class, this epoch
        self.two_usable = two_usable
        self.forced = forced
        self.used: list[int] = []  # threads each epoch ran on
        self.two = two_usable  # the thread setting the last epoch settled on
        self._rate: dict[bool, float | None] = {True: None, False: None}  # s/step, last epoch
        self._since, self._period = 0, 8  # epochs since the other setting was last tried
        self.sample_one = False  # this epoch: measure one thread on its first steps (GUARDED)
        self._warm = False  # has an epoch run already (and is its time worth comparing)?
        self._recorded = False  # did ``_run`` record this epoch's rate itself?

    def train_epoch(self, x, y, order, rng) -> tuple[float, float, int]:
        """Run one epoch over ``x[order]``; return (sum of losses, number correct, steps)."""
        y_ord = y[order]
        if self.forced is not None:
            self.two = self.forced > 1 and self.two_usable
        elif self.two_usable:
            self.two = self._choose()
        t0 = time.perf_counter()
        self._recorded = False
        steps = self._run(x, y_ord, order, rng, self.two)  # may move to one thread part-way
        self.used.append(2 if self.two else 1)
        if self._warm and not self._recorded:
            self._record(self.two, (time.perf_counter() - t0) / steps)
        self._warm = True  # the first epoch loads (or compiles) code and touches fresh memory
        return (*self._tally(y_ord), steps)

    def _tally(self, y_ord) -> tuple[float, int]:
        """The epoch's summed loss and number correct, from ``pt`` and ``pred``."""
        loss = -np.log(np.clip(self.pt, LO, HI)).astype(np.float64).sum()
        return float(loss), int((self.pred == y_ord).sum())

    def _run(self, x, y_ord, order, rng, two: bool) -> int:
        """Train on ``x[order]`` (labels ``y_ord``), fill ``pt`` and ``pred``; return the steps."""
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities float32 ``(N, C)`` for rows ``x`` ``(N, D)``, float32 or uint8."""
        raise NotImplementedError

    def _choose(self) -> bool:
        """Two threads this epoch? The faster setting by the last whole epoch run with each,
        trying the other one again after 8, 16, 32... epochs while the choice holds (a
        ``GUARDED`` loop on two threads measures one thread on the epoch's first steps instead).

        Whole epochs, not a few steps: with another busy process, the scheduler shares the cores
        fairly only over tens of milliseconds, and an idle worker thread keeps spinning for a
        while after its last task, so short trials favoured two threads that then made the epoch
        1.5x slower.
        """
        for two in (True, False):  # each setting once first, two threads first
            if self._rate[two] is None:
                return two
        best = self._rate[True] <= self._rate[False]
        self._since += 1
        if self._since > self._period:
            self._since = 0
            self._period *= 2
            if best and self.GUARDED:
                self.sample_one = True
                return True
            return not best
        return best

    def _record(self, two: bool, per_step: float) -> None:
        if self._rate[two] is not None and self._rate[not two] is not None:
            was_best = self._rate[True] <= self._rate[False]
            self._rate[two] = per_step
            if (self._rate[True] <= self._rate[False]) != was_best:
                self._period = 8  # the machine changed: look again sooner
        else:
            self._rate[two] = per_step

    def write_back(self, steps: int) -> None:
        """Copy weights, momentums and the iteration count into the Keras variables."""
        arrays = [a for pair in zip(self.w, self.b, strict=True) for a in pair if a is not None]
        for v, a in zip(self.vars, arrays, strict=True):
            v.assign(a)
        if self.m_flat is not None:
            off = 0
            for m in self.optimizer.momentums:
                m.assign(self.m_flat[off : off + math.prod(m.shape)].reshape(m.shape))
                off += math.prod(m.shape)
        self.optimizer.iterations.assign(self.optimizer.iterations + steps)
