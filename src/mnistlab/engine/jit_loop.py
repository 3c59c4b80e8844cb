"""Plain SGD for a Flatten/Dense MLP as compiled code: ``fit_fast``'s fastest path.

The numpy loop (``engine.numpy_loop``) spends about half of each step on the call overhead of
some 40 small numpy operations. Here a whole epoch is one call into numba-compiled code
(``engine.kernels``): the matrix products still go to numpy's OpenBLAS, the rest are
loops without any Python between them. Two threads split each step by data (each takes half the
batch forward and backward, then updates its share of the parameters), which does not change a
bit of the result, so the faster of one or two threads is chosen per epoch as in the numpy loop.

Measured on the tutorial's network (2-vCPU VM, full-size Fashion-MNIST, 329 steps of 128): a
prototype of this loop took 0.115 s of training per epoch on two threads (0.20 s on one), the
numpy loop 0.165 s in the same process; ``mnistlab train`` now runs 0.133-0.143 s per epoch with
validation (``bench/performance.py``).

Not for dropout (the numpy loop draws its masks with numpy's generator) and only where numba
and numpy's OpenBLAS are there: ``available(plan)`` says.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from mnistlab.engine.forward import CHUNK, CompiledForward
from mnistlab.engine.sgd_loop import SgdLoop

log = logging.getLogger(__name__)
_ALIGN = 16  # the first kernel's rows are split at a multiple of this (64-byte cache lines)
GUARD_STEPS = 32  # steps per call on two threads, between checks that two are still faster
SLOWER = 1.25  # two threads this much slower per step than one: finish the epoch on one
RETRY_STEPS = 8  # a re-trial of two threads (one was faster) is checked first after these steps


def available(plan, most_threads: int = 2) -> bool:
    """Should ``JitLoop`` train this plan here, with up to ``most_threads`` threads?

    Not with dropout, and not when two threads are wanted but numba cannot run two (no OpenMP or
    TBB): one compiled thread (0.24 s/epoch on the tutorial's network) is slower than the numpy
    loop's two BLAS threads (0.19 s). Raises ImportError without numba or numpy's OpenBLAS.
    """
    from mnistlab.engine import kernels

    kernels.load()  # ImportError here
    if any(d.dropout for d in plan):
        return False
    if any(d.activation not in kernels.ACTIVATIONS for d in plan[:-1]):
        return False
    return most_threads < 2 or kernels.parallel_threads() > 1


def split_row(n_in: int, widths: list[int]) -> int:
    """Where the first kernel's rows are split between the two updating threads: the second
    thread also updates every later layer, so the first takes a little more than half."""
    first = n_in * widths[0]
    rest = sum(a * b for a, b in zip(widths, widths[1:], strict=False))
    cut = round((first + rest) / 2 / widths[0] / _ALIGN) * _ALIGN
    return min(max(cut, 0), n_in)


class JitLoop(SgdLoop):
    """A whole epoch per call into compiled code; one instance per ``fit_fast`` call.

    ``most_threads``: 1 to stay on the calling thread (a caller's BLAS limit of one);
    ``forced``: 1 or 2 to use that many threads every epoch instead of measuring (same bits).
    """

    GUARDED = True

    def __init__(self, plan, optimizer, batch_size: int, n_in: int, n_train: int, most_threads=2,
                 forced: int | None = None, compile_now: bool = False):
        """``compile_now``: compile here if the cache lacks the kernels, instead of training on the
        numpy replica while a background process compiles them (``engine.warm``)."""
        from mnistlab.engine import kernels

        jk = kernels.load()
        super().__init__(plan, optimizer, batch_size, n_train, False, forced)
        self.jk = jk
        widths = [d.kernel.shape[1] for d in plan]
        self.layout = np.array(
            [[k, *d.kernel.shape, b] for d, (k, b) in zip(plan, self.offsets, strict=True)],
            np.int64,
        )
        self.acts = np.array(
            [kernels.ACTIVATIONS[d.activation] for d in plan[:-1]] + [0], np.int64
        )
        self.hoff = np.concatenate(
            [[0], np.cumsum([batch_size * w for w in widths[:-1]])]
        ).astype(np.int64)
        m_flat = self.m_flat if self.m_flat is not None else np.empty(0, np.float32)
        self.net = (self.w_flat, self.g_flat, m_flat, self.layout, self.acts, self.hoff)
        f32 = np.float32
        self.buf = (
            np.empty((batch_size, n_in), f32),  # the batch's inputs
            np.empty(max(int(self.hoff[-1]), 1), f32),  # hidden outputs
            np.empty(max(int(self.hoff[-1]), 1), f32),  # their gradients
            np.empty((batch_size, widths[-1]), f32),  # logits, then their gradient
            np.empty((2, max(widths)), f32),  # per-thread bias-gradient sums
        )
        self.cut = split_row(n_in, widths)
        # the weights as they train (the flat buffer itself, not a copy)
        self.forward = CompiledForward(self.w_flat, self.layout, self.acts)
        self.replica = self.warming = None
        self.replica_epochs = 0  # epochs trained on the replica before the compiled code was ready
        if not kernels.compiled_before(stage="loop"):
            self._while_compiling(jk, compile_now)
        # validation on numba's two threads once ``forward_two`` is cached (compiled after the rest)
        self.fwd_two = compile_now or kernels.compiled_before()
        # the thread count is measured once the compiled code runs (the probe loads a kernel)
        self.two_usable = self.two = (
            most_threads > 1 and self.replica is None and kernels.parallel_threads() > 1
        )
        self._most = most_threads

    def _while_compiling(self, jk, compile_now: bool) -> None:
        """The cache lacks the kernels: train on the replica while they compile elsewhere, or
        (other activations, or asked to) compile them here, saying so."""
        from mnistlab.engine import replica, warm
        from mnistlab.engine.blas import Threads

        sgemm = Threads()._sgemm
        if not compile_now and sgemm is not None and replica.exact(self.acts[:-1]):
            try:
                self.warming = warm.start(training=True)
            except OSError as e:  # no cache folder to compile into: compile here, in memory
                log.info("mnistlab: cannot compile in the background (%s)", e)
            else:
                self.replica = replica.Replica(sgemm)
                log.info("mnistlab: compiling the training loop in the background; numpy "
                         "meanwhile")
                return
        # A warning so that it shows without any logging set up (Python's last-resort handler
        # prints it to stderr): the user would otherwise wait ~12 s for nothing.
        log.warning(
            "mnistlab: compiling the training loop for this machine (once, about 12 s; kept in "
            "%s)", jk.numba.config.CACHE_DIR,
        )

    def train_epoch(self, x, y, order, rng):
        if self.replica is not None and self.warming.ready("loop"):
            self._switch()
        if self.replica is None:
            return super().train_epoch(x, y, order, rng)
        y_ord = y[order]
        self.replica.epoch(
            x, _scale(x), order, y_ord.astype(np.int64, copy=False), self.bs, self.cut, self.lr,
            self.mom, self.nesterov, self.m_flat is None, self.net, self.buf, self.pt, self.pred,
        )
        self.used.append(1)
        self.replica_epochs += 1
        return (*self._tally(y_ord), -(-len(order) // self.bs))

    def _switch(self) -> None:
        """The compiled kernels are cached: train on them from this epoch (the same bits)."""
        from mnistlab.engine import kernels

        self.replica = None
        self.two_usable = self._most > 1 and kernels.parallel_threads() > 1
        self.two = self.two_usable
        log.info("mnistlab: the compiled training loop is ready; switching to it")

    def _run(self, x, y_ord, order, rng, two: bool) -> int:
        n, bs = len(order), self.bs
        y_ord = y_ord.astype(np.int64, copy=False)

        def call(kernel, s, e):  # steps [s/bs, e/bs): the same steps as one call over them all
            kernel(x, _scale(x), order[s:e], y_ord[s:e], bs, self.cut, self.lr, self.mom,
                   self.nesterov, self.m_flat is None, self.net, self.buf, self.pt[s:e],
                   self.pred[s:e])

        if not two or self.forced is not None:
            call(self.jk.epoch_two if two else self.jk.epoch_one, 0, n)
            return -(-n // bs)
        # Two threads, guarded: another process may take the second core, and then an epoch on
        # two threads can take 6x one on one thread. Check after every GUARD_STEPS steps and
        # finish the epoch on one thread if two are slower (same bits either way).
        one, chunk, first = self._rate[False], GUARD_STEPS * bs, 0  # one: s/step on one thread
        sample, self.sample_one = one is None or self.sample_one, False
        if sample and n > 2 * chunk:  # not measured yet (the first epochs) or due again
            one, first = self._one_thread_rate(call, chunk), chunk
        elif one is None:  # too short to guard
            call(self.jk.epoch_two, 0, n)
            return -(-n // bs)
        # A re-trial (one thread was the faster): beside a busy core its first steps cost most.
        rates = self._rate[True], self._rate[False]
        retrial = None not in rates and rates[0] > rates[1]
        t0, s, size = time.perf_counter(), first, (RETRY_STEPS if retrial else GUARD_STEPS) * bs
        while s < n:
            e = min(n, s + size)
            call(self.jk.epoch_two, s, e)
            per_step = (time.perf_counter() - t0) / -(-(e - first) // bs)
            if e < n and per_step > SLOWER * one:
                if self._warm:  # not in the first epoch (code loading, Keras' import beside it)
                    self._record(True, per_step)
                self._recorded = True  # the two-thread rate just seen, not this mixed epoch's
                self.two = False  # the rest of this epoch, and what it is recorded as
                call(self.jk.epoch_one, e, n)
                break
            s, size = e, chunk
        else:
            if first and self._warm:  # the two-thread steps' rate, not the one-thread start's
                self._record(True, (time.perf_counter() - t0) / -(-(n - first) // bs))
                self._recorded = True
        return -(-n // bs)

    def _one_thread_rate(self, call, rows: int) -> float:
        """Train the epoch's first ``rows`` rows (GUARD_STEPS steps) on one thread; return, and
        after the first epoch keep, their time per step (both kernels loaded before the clock)."""
        call(self.jk.epoch_one, 0, 0)
        call(self.jk.epoch_two, 0, 0)
        t0 = time.perf_counter()
        call(self.jk.epoch_one, 0, rows)
        one = (time.perf_counter() - t0) / GUARD_STEPS
        if self._warm:
            self._record(False, one)
        return one

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.replica is not None:
            out = np.empty((len(x), self.layout[-1, 2]), np.float32)
            self.replica.forward(x, _scale(x), self.w_flat, self.layout, self.acts, CHUNK, out)
            return out
        if not self.fwd_two:  # compiled last in the background: ready after the loop's switch
            from mnistlab.engine import kernels

            self.fwd_two = kernels.compiled_before()
        if not self.two or x.dtype != np.float32 or not self.fwd_two:
            return self.forward(x, _scale(x), self.two)
        # Validation (float32 rows) on numba's threads, not the forward pass' helper thread (see
        # ``kernels.forward_two``); compiled for float32 rows only (a parallel kernel takes ~2 s).
        out = np.empty((len(x), self.layout[-1, 2]), np.float32)
        half = min(len(x), -(-len(x) // 2 // CHUNK) * CHUNK)
        self.jk.forward_two(x, _scale(x), self.w_flat, self.layout, self.acts, CHUNK, half, out)
        return out


def _scale(x: np.ndarray) -> np.float32:
    """What each input value is multiplied by: ``to_input``'s 1/255 for uint8 pixels, else 1
    (a float32 times 1 is exact)."""
    return np.float32(1 / 255) if x.dtype == np.uint8 else np.float32(1)
