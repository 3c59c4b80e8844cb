"""The compiled kernels' epoch and forward pass written in numpy, bit for bit.

While numba compiles ``engine.kernels`` for a new machine (about 11-14 s, once), ``JitLoop``
trains on this copy and switches to the compiled code at an epoch boundary when it is ready
(``engine.warm``). The switch must not change a bit, so this module does exactly what the kernels
do: the same ``cblas_sgemm`` calls (same sizes, strides and alpha/beta, on one BLAS thread), the
same float32 operations in the same order (ReLU and its gradient by comparison, the softmax's exp
from ``kernels._exp32``'s polynomial, its sum column by column, the bias gradients summed row by
row), the products of both halves of every batch in turn as ``epoch_one`` does (the elementwise
operations once over the whole batch: each row's numbers are its own). Only ReLU and linear hidden
layers (the library tanh and sigmoid differ between numba and numpy): ``exact(acts)`` says.

It is slower than the compiled code (numpy's call overhead on small arrays, one thread): it exists
so that the first run on a machine does not wait for the compiler.
"""

from __future__ import annotations

import numpy as np

from mnistlab.engine.kernels import (
    ACTIVATIONS,
    EXP_C1,
    EXP_C2,
    EXP_LOG2E,
    EXP_LOWEST,
    EXP_P,
    EXP_POW2,
)

EXACT = (ACTIVATIONS["linear"], ACTIVATIONS["relu"])
_LO, _HI = np.float32(1e-7), np.float32(1 - 1e-7)


def exact(acts) -> bool:
    """Can this copy reproduce the kernels for hidden activation codes ``acts``?"""
    return all(int(a) in EXACT for a in acts)


def exp32(v: np.ndarray) -> np.ndarray:
    """``kernels._exp32`` on a float32 array (a new array)."""
    v = np.maximum(v, EXP_LOWEST)  # NaN stays NaN
    n = np.rint(v * EXP_LOG2E)
    r = v - n * EXP_C1 - n * EXP_C2
    p0, p1, p2, p3, p4, p5 = EXP_P
    y = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
    y = y * (r * r) + r + np.float32(1)
    return y * EXP_POW2[np.fmax(n, -126).astype(np.intp) + 126]  # NaN: y is NaN


class Gemm:
    """``kernels._mm`` through ctypes: ``c = alpha * op(a) @ op(b) + beta * c``."""

    def __init__(self, sgemm):
        self.sgemm = sgemm  # blas.Threads()._sgemm: numpy's cblas_sgemm with argtypes set

    def __call__(self, ta, tb, alpha, a, b, beta, c) -> None:
        m, n = c.shape
        k = a.shape[0] if ta else a.shape[1]
        if m == 0 or n == 0:
            return
        self.sgemm(101, 112 if ta else 111, 112 if tb else 111, m, n, k, alpha,
                   a.ctypes.data, a.strides[0] // 4, b.ctypes.data, b.strides[0] // 4, beta,
                   c.ctypes.data, c.strides[0] // 4)


def _kernel(flat, layout, j):
    o, i, w = layout[j, 0], layout[j, 1], layout[j, 2]
    return flat[o : o + i * w].reshape(i, w)


def _bias(flat, layout, j):
    return flat[:0] if layout[j, 3] < 0 else flat[layout[j, 3] : layout[j, 3] + layout[j, 2]]


def _hidden(buf, hoff, layout, j, rows):
    return buf[hoff[j] : hoff[j] + rows * layout[j, 2]].reshape(rows, layout[j, 2])


def _zeros(shape) -> np.ndarray:
    return np.zeros(shape, np.float32)  # against an array: 3x faster than the scalar 0


def _bias_act(h, b, code) -> None:
    if len(b):
        h += b
    if code == ACTIVATIONS["relu"]:
        np.maximum(h, _zeros(h.shape[1]), out=h)


def _act_back(g, a, code) -> None:
    if code == ACTIVATIONS["relu"]:
        np.multiply(g, a > 0, out=g)


def _softmax_rows(z, b) -> None:
    if len(b):
        z += b
    e = exp32(z - z.max(axis=1, keepdims=True))
    total = e[:, 0].copy()
    for c in range(1, e.shape[1]):
        total += e[:, c]
    np.divide(e, total[:, None], out=z)


def _loss_grad(z, y, pt, pred, scale) -> None:
    rows = np.arange(len(z))
    pred[:] = z.argmax(axis=1)
    p = z[rows, y]
    pt[:] = p
    z[rows, y] -= np.float32(1)
    z *= scale
    z[(p <= _LO) | (p >= _HI)] = 0


def _momentum(w, g, m, mom, nesterov) -> None:
    m *= mom
    m -= g
    if nesterov:
        w += m * mom - g
    else:
        w += m


class Replica:
    """``epoch_one`` and ``forward_rows`` of ``engine.kernels`` for one ``JitLoop``'s buffers."""

    def __init__(self, sgemm):
        self.mm = Gemm(sgemm)

    def epoch(self, x, scale, order, y_ord, bs, cut, lr, mom, nesterov, plain, net, buf, pt,
              pred) -> None:
        n = order.shape[0]
        for start in range(0, n, bs):
            k = min(bs, n - start)
            h = (k + 1) // 2
            halves = [(t * h, min(h, k - t * h)) for t in range(2)]
            self._step(x, scale, order, y_ord, start, [hv for hv in halves if hv[1] > 0], k, lr,
                       net, buf, pt, pred)
            for t in range(2):
                self._update(t, k, cut, mom, nesterov, plain, net, buf)

    def _step(self, x, scale, order, y_ord, start, halves, k, lr, net, buf, pt, pred) -> None:
        """``epoch_one``'s two ``_half`` calls of one step: the products half by half, as the
        kernel calls them, and each elementwise operation once over the whole batch (every row's
        numbers are its own, so the bits are the same; half the numpy calls)."""
        w_flat, _, _, layout, acts, hoff = net
        xb, hbuf, gbuf, z, _ = buf
        last = layout.shape[0] - 1
        rows = xb.shape[0]
        np.multiply(x[order[start : start + k]], scale, out=xb[:k], dtype=np.float32,
                    casting="unsafe")
        a = xb
        for j in range(last):
            h = _hidden(hbuf, hoff, layout, j, rows)
            for r0, kt in halves:
                self.mm(False, False, 1.0, a[r0 : r0 + kt], _kernel(w_flat, layout, j), 0.0,
                        h[r0 : r0 + kt])
            _bias_act(h[:k], _bias(w_flat, layout, j), acts[j])
            a = h
        for r0, kt in halves:
            self.mm(False, False, 1.0, a[r0 : r0 + kt], _kernel(w_flat, layout, last), 0.0,
                    z[r0 : r0 + kt])
        _softmax_rows(z[:k], _bias(w_flat, layout, last))
        s = slice(start, start + k)
        _loss_grad(z[:k], y_ord[s], pt[s], pred[s], np.float32(lr / k))
        g = z
        for j in range(last, 0, -1):
            gp = _hidden(gbuf, hoff, layout, j - 1, rows)
            for r0, kt in halves:
                self.mm(False, True, 1.0, g[r0 : r0 + kt], _kernel(w_flat, layout, j), 0.0,
                        gp[r0 : r0 + kt])
            _act_back(gp[:k], _hidden(hbuf, hoff, layout, j - 1, rows)[:k], acts[j - 1])
            g = gp

    def _update(self, t, k, cut, mom, nesterov, plain, net, buf) -> None:
        w_flat, g_flat, m_flat, layout, _, hoff = net
        xb, hbuf, gbuf, z, _ = buf
        n_layers = layout.shape[0]
        rows = xb.shape[0]
        lo, hi = (0, cut) if t == 0 else (cut, layout[0, 1])
        for j in range(n_layers if t == 1 else 1):
            if j == 0:
                a, r0, r1 = xb[:k, lo:hi], lo, hi
            else:
                a, r0, r1 = _hidden(hbuf, hoff, layout, j - 1, rows)[:k], 0, layout[j, 1]
            d = z[:k] if j == n_layers - 1 else _hidden(gbuf, hoff, layout, j, rows)[:k]
            w = _kernel(w_flat, layout, j)[r0:r1]
            if plain:
                self.mm(True, False, -1.0, a, d, 1.0, w)
            else:
                g = _kernel(g_flat, layout, j)[r0:r1]
                self.mm(True, False, 1.0, a, d, 0.0, g)
                _momentum(w, g, _kernel(m_flat, layout, j)[r0:r1], mom, nesterov)
            if t == 1 and layout[j, 3] >= 0:
                total = d.sum(axis=0)  # row by row, as the kernel adds them
                b = _bias(w_flat, layout, j)
                if plain:
                    b -= total
                else:
                    _momentum(b, total, _bias(m_flat, layout, j), mom, nesterov)

    def forward(self, x, scale, w_flat, layout, acts, chunk, out) -> None:
        """``kernels.forward_rows``: probabilities of rows ``x`` into ``out``."""
        last = layout.shape[0] - 1
        for s in range(0, x.shape[0], chunk):
            e = min(x.shape[0], s + chunk)
            if x.dtype == np.float32 and scale == 1:
                a = x[s:e]
            else:
                a = np.multiply(x[s:e], scale, dtype=np.float32, casting="unsafe")
            for j in range(last):
                h = np.empty((e - s, layout[j, 2]), np.float32)
                self.mm(False, False, 1.0, a, _kernel(w_flat, layout, j), 0.0, h)
                _bias_act(h, _bias(w_flat, layout, j), acts[j])
                a = h
            self.mm(False, False, 1.0, a, _kernel(w_flat, layout, last), 0.0, out[s:e])
            _softmax_rows(out[s:e], _bias(w_flat, layout, last))
