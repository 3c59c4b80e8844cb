"""Plain SGD for a Flatten/Dense/Dropout MLP in float32 numpy: ``fit_fast``'s numpy path.

Where the time goes, per step of the tutorial's 784-100-64-32-10 network at batch 128: the first
layer's two matrix products (forward, and its kernel's gradient) are ~90 % of the arithmetic;
everything else is a few dozen numpy calls on 128 x 100 or smaller arrays, costing their call
overhead. So:

* The two big products run on two OpenBLAS threads when the machine has two free cores; the rest
  on one thread (a second thread only adds hand-offs there). Whether two threads are faster is
  measured on whole epochs (each setting once, then the other again after 8, 16, 32... epochs),
  since another process may hold the second core: with one busy process beside it, two threads
  made epochs 1.5x slower than one.
* The thread count never changes the result. OpenBLAS with two threads sums the first layer's
  784 inputs in two halves; the loop's own (canonical) product is defined as those two halves
  summed, and at start-up a probe on random data checks, per matrix shape, that the two-thread call
  reproduces it bit for bit; where it does not, the halves are computed explicitly.
* Plain SGD updates the first kernel inside its gradient's product (``cblas_sgemm`` with beta 1):
  writing 313 KB the other thread had just read cost more than the product saved.
* The loss gradient is scaled by ``lr / batch`` before back-propagation, so the gradients come out
  as the update itself.
* The small operations use the cheapest numpy form measured (a bias gradient as ``ones @ g``,
  1 us, not ``g.sum(0)``, 5 us; ReLU against a zeros array, 2 us, not the scalar 0, 6 us; the
  softmax on the transposed logits, where numpy's reductions run along contiguous rows), and each
  batch size has its own buffers, so no per-step slicing.
"""

from __future__ import annotations

import contextlib

import numpy as np

from mnistlab.engine.blas import Threads
from mnistlab.engine.loss import HI as _HI
from mnistlab.engine.loss import LO as _LO
from mnistlab.engine.sgd_loop import SgdLoop
from mnistlab.model import to_input

VAL_CHUNK = 4096
_SPLIT_ABOVE = 512  # first-layer inputs summed in two halves above this many (OpenBLAS' blocking)


def act_forward(name: str, z: np.ndarray, out: np.ndarray, zeros=0) -> None:
    """``out = activation(z)``; ``out`` may be ``z``. ``zeros``: an array of zeros like ``z``
    makes ReLU three times faster than the scalar."""
    if name == "relu":
        np.maximum(z, zeros, out=out)
    elif name == "tanh":
        np.tanh(z, out=out)
    elif name == "sigmoid":  # 1 / (1 + exp(-z))
        np.negative(z, out=out)
        np.exp(out, out=out)
        out += 1
        np.reciprocal(out, out=out)
    elif out is not z:  # linear
        np.copyto(out, z)


def act_backward(name: str, a: np.ndarray, g: np.ndarray, tmp: np.ndarray, like) -> None:
    """Multiply ``g`` in place by the activation's derivative, given its output ``a``.
    ``tmp``: float32 scratch like ``a``; ``like``: its ``zeros`` and ``bools`` (a ``_Like``)."""
    if name == "relu":
        np.greater(a, like.zeros, out=like.bools)
        np.multiply(g, like.bools, out=g)
    elif name == "tanh":
        np.multiply(a, a, out=tmp)
        np.subtract(1, tmp, out=tmp)
        g *= tmp
    elif name == "sigmoid":
        np.subtract(1, a, out=tmp)
        tmp *= a
        g *= tmp


def _split_point(n_in: int) -> int | None:
    """Where the first layer's sum over inputs is cut in two, or None (one piece)."""
    if n_in <= _SPLIT_ABOVE:
        return None
    return (n_in // 2 + 7) // 8 * 8


class FirstLayer:
    """The first Dense layer's two big products, bit-identical on one or two BLAS threads.

    Used inside a one-thread BLAS limit (``fit_fast`` sets it): after a two-thread call it goes
    back to one thread.
    """

    def __init__(self, kernel, threads: Threads, train_rows: set[int], val_rows=frozenset()):
        """``kernel``: the (n_in, n_out) view into the flat parameters; ``train_rows``: the batch
        sizes trained on; ``val_rows``: row counts only predicted (forward pass)."""
        self.w = kernel  # (n_in, n_out) view into the flat parameters
        self.threads = threads
        self.cut = _split_point(kernel.shape[0])
        rows = set(train_rows) | set(val_rows)
        self.tmp = np.empty((max(rows), kernel.shape[1]), np.float32)
        # row counts for which the two-thread call equals the canonical product
        self.fast_forward: set[int] = set()
        self.fast_gradient: set[int] = set()
        self.fast_update: set[int] = set()
        if threads.usable:
            self._probe(rows, set(train_rows))

    def forward(self, a: np.ndarray, out: np.ndarray, two: bool) -> None:
        """``out = a @ w``, summing the inputs in the canonical two halves."""
        if two and len(a) in self.fast_forward:
            self.threads.set(self.threads.most)
            np.dot(a, self.w, out=out)
            self.threads.set(1)
        elif self.cut is None:
            np.dot(a, self.w, out=out)
        else:
            c, tmp = self.cut, self.tmp[: len(a)]
            np.dot(a[:, :c], self.w[:c], out=out)
            np.dot(a[:, c:], self.w[c:], out=tmp)
            out += tmp

    def gradient(self, a: np.ndarray, g: np.ndarray, out: np.ndarray, two: bool) -> None:
        """``out = a.T @ g`` (the kernel's gradient)."""
        if two and len(a) in self.fast_gradient:
            self.threads.set(self.threads.most)
            np.dot(a.T, g, out=out)
            self.threads.set(1)
        else:
            np.dot(a.T, g, out=out)

    def update(self, a: np.ndarray, g: np.ndarray, two: bool) -> None:
        """``w -= a.T @ g`` (plain SGD with ``g`` already times lr) in one BLAS call."""
        if two and len(a) in self.fast_update:
            self.threads.set(self.threads.most)
            self.threads.sub_product(a, g, self.w)
            self.threads.set(1)
        else:
            self.threads.sub_product(a, g, self.w)

    def _probe(self, rows: set[int], train_rows: set[int]) -> None:
        rng = np.random.default_rng(0)
        n_in, n_out = self.w.shape
        w = rng.random((n_in, n_out), dtype=np.float32)
        big_a = rng.random((max(rows), n_in), dtype=np.float32)
        big_g = rng.standard_normal((max(rows), n_out), dtype=np.float32)
        saved, self.w = self.w, w
        try:
            for m in sorted(rows):
                a, g = big_a[:m], big_g[:m]
                one, two = np.empty((m, n_out), np.float32), np.empty((m, n_out), np.float32)
                self.forward(a, one, two=False)
                self.threads.set(self.threads.most)
                np.dot(a, w, out=two)
                self.threads.set(1)
                if np.array_equal(one, two):
                    self.fast_forward.add(m)
                if m not in train_rows:  # validation only runs forward
                    continue
                self.threads.set(self.threads.most)
                gw_two = a.T @ g
                self.threads.set(1)
                if np.array_equal(a.T @ g, gw_two):
                    self.fast_gradient.add(m)
                one, two = w.copy(), w.copy()
                self.threads.sub_product(a, g, one)
                self.threads.set(self.threads.most)
                self.threads.sub_product(a, g, two)
                self.threads.set(1)
                if np.array_equal(one, two):
                    self.fast_update.add(m)
        finally:
            self.w = saved
            self.threads.set(1)


class _Buffers:
    """Scratch arrays for one batch size ``k`` (the full batch, and the last partial one)."""

    def __init__(self, k: int, n_in: int, widths: list[int]):
        f32 = np.float32
        self.x = np.empty((k, n_in), f32)
        self.raw = np.empty((k, n_in), np.uint8)
        self.dropped = [np.empty((k, w), f32) for w in [n_in, *widths[:-1]]]
        self.masks = [np.empty((k, w), f32) for w in [n_in, *widths[:-1]]]
        self.h = [np.empty((k, w), f32) for w in widths[:-1]]  # hidden outputs
        self.dh = [np.empty((k, w), f32) for w in widths[:-1]]  # their gradients
        self.tmp = [np.empty((k, w), f32) for w in widths[:-1]]
        self.acts = [_Like(k, w) for w in widths[:-1]]
        self.logits = np.empty((widths[-1], k), f32)  # transposed: classes x batch
        self.colmax = np.empty(k, f32)
        self.ones = np.ones(k, f32)


class _Like:
    """Zeros and a bool scratch of one shape (ReLU and its derivative)."""

    def __init__(self, k: int, w: int):
        self.zeros = np.zeros((k, w), np.float32)
        self.bools = np.empty((k, w), bool)


class NumpyLoop(SgdLoop):
    """SGD on float32 numpy with preallocated buffers; one instance per ``fit_fast`` call."""

    def __init__(
        self, plan, optimizer, batch_size: int, n_in: int, n_train: int, n_val: int, threads=None,
        forced: int | None = None,
    ):
        """``threads``: a ``blas.Threads``; ``forced``: 1 or 2 threads every epoch."""
        threads = threads or Threads()
        super().__init__(plan, optimizer, batch_size, n_train, threads.usable, forced)
        self.threads = threads
        last = self.b[-1]
        self.b_out = None if last is None else last.reshape(-1, 1)  # for transposed logits
        self._zeros = [np.zeros(d.kernel.shape[1], np.float32) for d in plan]  # ReLU, by row
        if self.m_flat is not None:
            self.tmp_flat = np.empty_like(self.m_flat)

        widths = [d.kernel.shape[1] for d in plan]
        sizes = {batch_size, n_train % batch_size or batch_size}
        self.bufs = {k: _Buffers(k, n_in, widths) for k in sizes}
        # per-epoch arrays over the training set, refilled each epoch
        n, bs = n_train, batch_size
        self.onehot = np.empty((widths[-1], n), np.float32)
        self.flat = np.empty(n, np.intp)
        self.pos = np.arange(n)
        self.k_of = np.where(self.pos >= (n - 1) // bs * bs, n - (n - 1) // bs * bs, bs)
        self.col = self.pos % bs
        val_rows = {min(n_val, VAL_CHUNK), n_val % VAL_CHUNK or VAL_CHUNK} if n_val else set()
        self.first = FirstLayer(self.w[0], self.threads, sizes, val_rows)
        tail = self.w[0].size  # the parameters after the first kernel
        self.w_tail, self.g_tail = self.w_flat[tail:], self.g_flat[tail:]

    # ------------------------------------------------------------------ training
    def _run(self, x, y_ord, order, rng, two: bool) -> int:
        self.onehot.fill(0)
        self.onehot[y_ord, self.pos] = 1
        # index of each sample's true-class probability in its batch's (classes, k) logits
        np.multiply(y_ord, self.k_of, out=self.flat)
        self.flat += self.col
        starts = range(0, len(order), self.bs)
        self._steps(x, order, starts, rng, two)
        return len(starts)

    def _steps(self, x, order, starts, rng, two: bool) -> None:
        two = two and self.threads.usable
        with self.threads.pinned() if two else contextlib.nullcontext():
            for start in starts:
                self._step(x, order, start, rng, two)

    def _step(self, x, order, start: int, rng, two: bool) -> None:
        plan, last = self.plan, len(self.plan) - 1
        idx = order[start : start + self.bs]
        k = len(idx)
        buf = self.bufs[k]
        if x.dtype == np.uint8:  # pixels: gather a quarter of the bytes, then scale
            np.take(x, idx, axis=0, out=buf.raw, mode="clip")
            to_input(buf.raw, out=buf.x)
        else:  # mode "clip": the indices are in range, and "raise" buffers the copy
            np.take(x, idx, axis=0, out=buf.x, mode="clip")
        inputs = []  # each Dense layer's (dropped-out) input
        a = buf.x
        for j, d in enumerate(plan):
            if d.dropout:
                a = self._dropout(j, a, buf, rng)
            inputs.append(a)
            if j == last:
                break
            h = buf.h[j]
            if j == 0:
                self.first.forward(a, h, two)
            else:
                np.dot(a, self.w[j], out=h)
            if self.b[j] is not None:
                np.add(h, self.b[j], out=h)
            act_forward(d.activation, h, h, buf.acts[j].zeros)
            a = h
        # logits, transposed (classes x batch): the softmax reduces along contiguous rows
        z = buf.logits
        np.dot(self.w[last].T, a.T, out=z)
        if self.b_out is not None:
            np.add(z, self.b_out, out=z)
        self._softmax_grad(z, buf, start, k)
        g = z.T  # (k, classes)
        for j in range(last, -1, -1):
            inp = inputs[j]
            if self.b[j] is not None:
                np.dot(buf.ones, g, out=self.gb[j])
            if j == 0:
                break
            np.dot(inp.T, g, out=self.gw[j])
            gp = buf.dh[j - 1]
            np.dot(g, self.w[j].T, out=gp)
            act_backward(plan[j - 1].activation, buf.h[j - 1], gp, buf.tmp[j - 1], buf.acts[j - 1])
            if plan[j].dropout:
                np.multiply(gp, buf.masks[j], out=gp)
            g = gp
        if self.m_flat is None:
            # The first kernel is updated in the product itself; its gradient is never stored.
            self.first.update(inputs[0], g, two)
            np.subtract(self.w_tail, self.g_tail, out=self.w_tail)
        else:
            self.first.gradient(inputs[0], g, self.gw[0], two)
            self._apply()

    def _dropout(self, j: int, a: np.ndarray, buf: _Buffers, rng) -> np.ndarray:
        """Keras' inverted dropout of layer ``j``'s input: a bernoulli(keep) mask / keep."""
        keep = np.float32(1 - self.plan[j].dropout)
        mask = buf.masks[j]
        np.less(rng.random(mask.shape, dtype=np.float32), keep, out=mask, casting="unsafe")
        mask /= keep
        np.multiply(a, mask, out=buf.dropped[j])
        return buf.dropped[j]

    def _softmax_grad(self, z: np.ndarray, buf: _Buffers, start: int, k: int) -> None:
        """Softmax of the transposed logits ``z`` (classes, k), record the step's losses and
        predictions, then turn ``z`` into ``lr * d(mean loss)/d(logits) = lr * (p - onehot) / k``,
        zero where Keras' clip (1e-7) is active."""
        colmax = buf.colmax
        np.max(z, axis=0, out=colmax)
        np.subtract(z, colmax, out=z)
        np.exp(z, out=z)
        np.sum(z, axis=0, out=colmax)
        np.divide(z, colmax, out=z)
        pt = self.pt[start : start + k]
        np.take(z.ravel(), self.flat[start : start + k], out=pt)
        np.argmax(z, axis=0, out=self.pred[start : start + k])
        np.subtract(z, self.onehot[:, start : start + k], out=z)
        if pt.min() <= _LO or pt.max() >= _HI:
            z[:, (pt <= _LO) | (pt >= _HI)] = 0
        np.multiply(z, np.float32(self.lr / k), out=z)

    def _apply(self) -> None:
        """Keras SGD with momentum, the gradients already times lr: m = mom*m - g, w += m
        (Nesterov: w += mom*m - g)."""
        g, m = self.g_flat, self.m_flat
        m *= self.mom
        m -= g
        if self.nesterov:
            np.multiply(m, self.mom, out=self.tmp_flat)
            self.tmp_flat -= g
            self.w_flat += self.tmp_flat
        else:
            self.w_flat += m

    # ------------------------------------------------------------------ evaluation
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities float32 ``(N, C)`` for rows ``x`` ``(N, D)``, float32 or uint8.

        The result is the transpose of a C-contiguous ``(C, N)`` array: the softmax runs on the
        transposed logits, where numpy reduces along long contiguous rows.
        """
        last = len(self.plan) - 1
        two = self.two and self.threads.usable
        out = np.empty((self.w[last].shape[1], len(x)), np.float32)
        for start in range(0, len(x), VAL_CHUNK):
            chunk = x[start : start + VAL_CHUNK]
            if chunk.dtype == np.uint8:
                chunk = to_input(chunk)
            a = np.empty((len(chunk), self.w[0].shape[1]), np.float32)
            self.first.forward(chunk, a, two)
            for j, d in enumerate(self.plan[:-1]):
                if j:
                    a = a @ self.w[j]
                if self.b[j] is not None:
                    a += self.b[j]
                act_forward(d.activation, a, a, self._zeros[j])
            z = out[:, start : start + len(chunk)]
            z[...] = self.w[last].T @ a.T
            if self.b_out is not None:
                z += self.b_out
        out -= out.max(axis=0)
        np.exp(out, out=out)
        out /= out.sum(axis=0)
        return out.T
