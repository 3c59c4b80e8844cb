"""Compiled (numba) kernels: a whole epoch of plain SGD in one call (``engine.jit_loop``) and a
Dense network's forward pass (``forward_rows``, for ``engine.forward``).

Importing this module loads nothing: ``load()`` (once per process) finds numpy's OpenBLAS, sets
numba up and hands the kernels to numba, which compiles each one on its first call, per input
type, and keeps the machine code in a cache folder (``cache_dir``), so later processes load it in
a fraction of a second. The matrix products call numpy's own OpenBLAS ``cblas_sgemm`` (one
thread per call); everything between them is a loop numba turns into vector code. The epoch
kernels release the GIL, so another thread can run Python meanwhile (``mnistlab.headstart``
imports Keras while the first epochs train).

Two threads split every step by data, not inside the products: each takes half the batch through
the forward and backward pass, then each updates its own share of the parameters (the first
kernel's rows ``[0, cut)`` or ``[cut, n_in)`` plus all the rest), with the whole batch. Which
thread computes a number never changes how it is computed, so one thread (``epoch_one``, the
same work in sequence) gives the same bits as two.

The network is given as flat float32 buffers and an int64 ``layout`` of shape ``(L, 4)``: per
Dense layer the offset of its kernel in the flat parameters, its inputs, its outputs and the offset
of its bias (-1: no bias); ``acts`` holds each hidden layer's activation code (``ACTIVATIONS``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mnistlab.engine.blas import Threads

ACTIVATIONS = {"linear": 0, "relu": 1, "tanh": 2, "sigmoid": 3}
# The version of the compiled loop's arithmetic, recorded with every run it trains (manifest
# ``engine.numerics``): raised whenever a change moves its results by a last bit, so ``rerun`` can
# tell a changed mnistlab from a broken reproduction. 2: the softmax's exp as the polynomial below
# and ReLU as numpy computes it (runs recorded without the field: 1).
NUMERICS = 2
# The softmax's exp, as float32 products and sums only (Cephes' expf: range reduction by ln 2, a
# degree-5 polynomial, a power of two from a table), so that numpy (``engine.replica``) computes
# the very same bits; a library exp differs between numba and numpy in the last bit.
EXP_LOWEST = np.float32(-87.0)  # exp(-87) ~ 1.6e-38: inputs below give this (softmax: ~0 anyway)
EXP_LOG2E = np.float32(1.44269504088896341)
EXP_C1, EXP_C2 = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 = C1 + C2
EXP_P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                      4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
EXP_POW2 = (2.0 ** np.arange(-126, 1)).astype(np.float32)  # 2**n for n = -126..0
_sgemm = None  # numpy's cblas_sgemm as a numba external function, set by ``load``
prange = range  # numba.prange once ``load`` has run (compiled code reads it when compiling)


def kernel(**options):
    """Mark a function as a kernel; ``load`` compiles it with numba, with ``options``."""

    def mark(fn):
        fn.numba_options = {"cache": True, **options}
        return fn

    return mark


def cache_dir(sgemm_int64: bool) -> Path:
    """Where compiled kernels are kept: ``$XDG_CACHE_HOME/mnistlab/numba/<numpy version>-<abi>``
    (numba's own ``NUMBA_CACHE_DIR`` wins). The numpy version and its BLAS' integer size are in
    the name because the cached code calls into numpy's OpenBLAS."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    abi = "ilp64" if sgemm_int64 else "lp64"
    return Path(base) / "mnistlab" / "numba" / f"numpy{np.__version__}-{abi}"


@functools.cache
def load() -> SimpleNamespace:
    """Set numba up for this process and return the compiled kernels (``epoch_one``,
    ``epoch_two``, ``forward_rows``, ``forward_two``, ``numba``); the first call of each kernel
    compiles it or loads it from the cache folder.

    Raises:
        ImportError: numba is missing, or numpy is not linked to an OpenBLAS with cblas_sgemm.
    """
    threads = Threads()
    if threads.sgemm_address is None:
        raise ImportError("numpy is not linked to an OpenBLAS with cblas_sgemm")
    import llvmlite.binding as llvm
    from numba import types

    from mnistlab.engine.numba_import import numba as _numba

    numba = _numba()
    from numba.extending import overload

    if not os.environ.get("NUMBA_CACHE_DIR"):  # read when a kernel is set up for caching
        numba.config.CACHE_DIR = str(cache_dir(threads.sgemm_int64))
    if not os.environ.get("NUMBA_THREADING_LAYER"):
        # OpenMP starts a parallel region in ~1.5 us here; numba's default fallback ("workqueue")
        # takes ~90 us, which for two regions a step would cost more than the second thread saves.
        numba.config.THREADING_LAYER = "omp"
    llvm.add_symbol("mnistlab_cblas_sgemm", threads.sgemm_address)
    index = types.int64 if threads.sgemm_int64 else types.int32
    p = types.uintp  # pointers passed as addresses (same calling convention)
    space = globals()
    space["prange"] = numba.prange
    space["_sgemm"] = types.ExternalFunction(
        "mnistlab_cblas_sgemm",
        types.void(types.int32, types.int32, types.int32, index, index, index, types.float32,
                   p, index, p, index, types.float32, p, index),
    )
    for name, fn in list(space.items()):
        if callable(fn) and hasattr(fn, "numba_options"):
            space[name] = numba.njit(**fn.numba_options)(fn)
    overload(_rows_in)(_rows_in_compiled)
    return SimpleNamespace(
        numba=numba, epoch_one=space["epoch_one"], epoch_two=space["epoch_two"],
        forward_rows=space["forward_rows"], forward_two=space["forward_two"],
        probe=space["_probe"],
    )


@kernel()
def _mm(ta, tb, alpha, a, b, beta, c):
    """``c = alpha * op(a) @ op(b) + beta * c`` (op: transposed when ``ta``/``tb``); float32
    2-D arrays whose rows may be spaced wider than their length (column slices)."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    if m == 0 or n == 0:
        return
    _sgemm(101, 112 if ta else 111, 112 if tb else 111, m, n, k, np.float32(alpha),
           a.ctypes.data, a.strides[0] // 4, b.ctypes.data, b.strides[0] // 4, np.float32(beta),
           c.ctypes.data, c.strides[0] // 4)


@kernel()
def _kernel(flat, layout, j):
    return flat[layout[j, 0] : layout[j, 0] + layout[j, 1] * layout[j, 2]].reshape(
        layout[j, 1], layout[j, 2]
    )


@kernel()
def _bias(flat, layout, j):
    """Layer ``j``'s bias, or an empty array."""
    if layout[j, 3] < 0:
        return flat[:0]
    return flat[layout[j, 3] : layout[j, 3] + layout[j, 2]]


@kernel()
def _hidden(buf, hoff, layout, j, rows):
    """Layer ``j``'s outputs (or their gradients) in a step's scratch: ``(rows, width)``."""
    return buf[hoff[j] : hoff[j] + rows * layout[j, 2]].reshape(rows, layout[j, 2])


@kernel()
def _bias_act(h, b, code):
    """``h = activation(h + b)`` in place."""
    rows, cols = h.shape
    nb = b.shape[0]
    for r in range(rows):
        for c in range(cols):
            v = h[r, c] + b[c] if nb else h[r, c]
            if code == 1:  # numpy's maximum(v, zeros): -0 becomes +0, NaN stays
                if v <= 0:
                    v = np.float32(0)
            elif code == 2:
                v = np.tanh(v)
            elif code == 3:
                v = np.float32(1) / (np.float32(1) + np.exp(-v))
            h[r, c] = v


@kernel()
def _act_back(g, a, code):
    """``g *= activation'``, given the activation's output ``a``."""
    rows, cols = g.shape
    for r in range(rows):
        for c in range(cols):
            v = a[r, c]
            if code == 1:  # times 0 or 1, as numpy's g * (a > 0)
                g[r, c] *= np.float32(1) if v > 0 else np.float32(0)
            elif code == 2:
                g[r, c] *= np.float32(1) - v * v
            elif code == 3:
                g[r, c] *= (np.float32(1) - v) * v


@kernel()
def _exp32(v):
    """``exp(v)`` for float32 ``v <= 0`` (NaN stays NaN), within ~1 ulp; the same bits as
    ``engine.replica.exp32``."""
    if v < EXP_LOWEST:
        v = EXP_LOWEST
    n = np.rint(v * EXP_LOG2E)
    if n != n:  # NaN
        return v
    r = v - n * EXP_C1 - n * EXP_C2
    p0, p1, p2, p3, p4, p5 = EXP_P
    y = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
    y = y * (r * r) + r + np.float32(1)
    return y * EXP_POW2[int(n) + 126]


@kernel()
def _softmax_rows(z, b):
    """Rows of ``z`` (logits) become ``softmax(z + b)``: exp by ``_exp32``, the sum in column
    order."""
    rows, cols = z.shape
    nb = b.shape[0]
    for r in range(rows):
        top = z[r, 0] + b[0] if nb else z[r, 0]
        for c in range(cols):
            if nb:
                z[r, c] += b[c]
            if z[r, c] > top:
                top = z[r, c]
        total = np.float32(0)
        for c in range(cols):
            e = _exp32(z[r, c] - top)
            z[r, c] = e
            total += e
        for c in range(cols):
            z[r, c] /= total


@kernel()
def _loss_grad(z, y, pt, pred, scale):
    """Record each row's true-class probability and argmax, then turn the probabilities ``z``
    into ``scale * (p - onehot)``, zero where Keras' clip (1e-7) is active."""
    lo, hi = np.float32(1e-7), np.float32(1 - 1e-7)
    rows, cols = z.shape
    for r in range(rows):
        best = 0
        for c in range(cols):
            if z[r, c] > z[r, best]:
                best = c
        pred[r] = best
        p = z[r, y[r]]
        pt[r] = p
        clipped = p <= lo or p >= hi
        for c in range(cols):
            if clipped:
                z[r, c] = 0
            else:
                z[r, c] = (z[r, c] - np.float32(1 if c == y[r] else 0)) * scale


@kernel()
def _half(x, scale, order, y_ord, start, r0, kt, k, lr, net, buf, pt, pred):
    """Forward and backward pass of rows ``[r0, r0 + kt)`` of the batch starting at ``start``
    (``k`` rows in all): leaves the hidden outputs in ``hbuf``, their gradients in ``gbuf`` and
    the logits' gradient (already times ``lr / k``) in ``z``."""
    w_flat, g_flat, m_flat, layout, acts, hoff = net
    xb, hbuf, gbuf, z, tmp = buf
    n_layers = layout.shape[0]
    n_in = x.shape[1]
    rows = xb.shape[0]
    for r in range(r0, r0 + kt):
        src = x[order[start + r]]
        for c in range(n_in):
            xb[r, c] = np.float32(src[c]) * scale
    a = xb[r0 : r0 + kt]
    for j in range(n_layers - 1):
        h = _hidden(hbuf, hoff, layout, j, rows)[r0 : r0 + kt]
        _mm(False, False, 1.0, a, _kernel(w_flat, layout, j), 0.0, h)
        _bias_act(h, _bias(w_flat, layout, j), acts[j])
        a = h
    last = n_layers - 1
    zr = z[r0 : r0 + kt]
    _mm(False, False, 1.0, a, _kernel(w_flat, layout, last), 0.0, zr)
    _softmax_rows(zr, _bias(w_flat, layout, last))
    s = start + r0
    _loss_grad(zr, y_ord[s : s + kt], pt[s : s + kt], pred[s : s + kt], np.float32(lr / k))
    g = zr
    for j in range(last, 0, -1):
        gp = _hidden(gbuf, hoff, layout, j - 1, rows)[r0 : r0 + kt]
        _mm(False, True, 1.0, g, _kernel(w_flat, layout, j), 0.0, gp)
        _act_back(gp, _hidden(hbuf, hoff, layout, j - 1, rows)[r0 : r0 + kt], acts[j - 1])
        g = gp


@kernel()
def _step_part(w, g, m, a, d, mom, nesterov, plain):
    """One parameter block's SGD step from inputs ``a (k, n)`` and output gradients ``d (k, o)``
    (already times lr): ``w -= a.T @ d``, or Keras' momentum update through ``g`` and ``m``."""
    if plain:
        _mm(True, False, -1.0, a, d, 1.0, w)
        return
    _mm(True, False, 1.0, a, d, 0.0, g)
    _momentum(w.ravel(), g.ravel(), m.ravel(), mom, nesterov)


@kernel()
def _momentum(w, g, m, mom, nesterov):
    """Keras SGD with momentum, ``g`` already times lr: m = mom*m - g; w += m (Nesterov:
    w += mom*m - g)."""
    for i in range(w.shape[0]):
        m[i] = m[i] * mom - g[i]
        if nesterov:
            w[i] += m[i] * mom - g[i]
        else:
            w[i] += m[i]


@kernel()
def _update(t, k, cut, mom, nesterov, plain, net, buf):
    """Thread ``t``'s share of the step's update, from the whole batch of ``k`` rows: the first
    kernel's rows ``[0, cut)`` (t = 0) or the rest of the parameters (t = 1)."""
    w_flat, g_flat, m_flat, layout, acts, hoff = net
    xb, hbuf, gbuf, z, tmp = buf
    n_layers = layout.shape[0]
    rows = xb.shape[0]
    n_in = layout[0, 1]
    lo, hi = (0, cut) if t == 0 else (cut, n_in)
    for j in range(n_layers):
        if j == 0:
            a = xb[:k, lo:hi]
            r0, r1 = lo, hi
        elif t == 0:
            break
        else:
            a = _hidden(hbuf, hoff, layout, j - 1, rows)[:k]
            r0, r1 = 0, layout[j, 1]
        d = z[:k] if j == n_layers - 1 else _hidden(gbuf, hoff, layout, j, rows)[:k]
        w = _kernel(w_flat, layout, j)[r0:r1]
        g = _kernel(g_flat, layout, j)[r0:r1]
        m = _kernel(m_flat, layout, j)[r0:r1] if not plain else g
        _step_part(w, g, m, a, d, mom, nesterov, plain)
        if t == 1 and layout[j, 3] >= 0:  # the biases are the second thread's
            _bias_step(_bias(w_flat, layout, j), _bias(g_flat, layout, j),
                       _bias(m_flat, layout, j) if not plain else tmp[t, :0], d,
                       tmp[t, : layout[j, 2]], mom, nesterov, plain)


@kernel()
def _bias_step(b, g, m, d, tmp, mom, nesterov, plain):
    """A bias' SGD step: its gradient is the column sums of ``d``. (Element loops, not
    ``tmp[:] = 0``: a slice assignment compiles numba's broadcasting, ~2.5 s of the first build.)"""
    for c in range(tmp.shape[0]):
        tmp[c] = 0
    for r in range(d.shape[0]):
        for c in range(d.shape[1]):
            tmp[c] += d[r, c]
    if plain:
        for c in range(b.shape[0]):
            b[c] -= tmp[c]
    else:
        for c in range(g.shape[0]):
            g[c] = tmp[c]
        _momentum(b, g, m, mom, nesterov)


@kernel()
def _part(phase, t, x, scale, order, y_ord, start, k, cut, lr, mom, nesterov, plain, net, buf, pt,
          pred):
    """Thread ``t``'s work in one phase of the step over rows ``[start, start + k)``: 0, its half of
    the batch forward and backward; 1, its share of the update."""
    if phase == 0:
        h = (k + 1) // 2
        _half(x, scale, order, y_ord, start, t * h, min(h, k - t * h), k, lr, net, buf, pt, pred)
    else:
        _update(t, k, cut, mom, nesterov, plain, net, buf)


@kernel(parallel=True, nogil=True)
def epoch_two(x, scale, order, y_ord, bs, cut, lr, mom, nesterov, plain, net, buf, pt, pred):
    """One epoch of SGD on two threads; ``pt``/``pred`` get each sample's true-class probability
    and predicted class (in ``order``). One parallel loop inside the phase loop, not one per
    phase: numba compiles each parallel loop as a function of its own."""
    n = order.shape[0]
    for start in range(0, n, bs):
        k = min(bs, n - start)
        for phase in range(2):  # the update waits for both halves
            for t in prange(2):
                _part(phase, np.int64(t), x, scale, order, y_ord, start, k, cut, lr, mom,
                      nesterov, plain, net, buf, pt, pred)


@kernel(nogil=True)
def epoch_one(x, scale, order, y_ord, bs, cut, lr, mom, nesterov, plain, net, buf, pt, pred):
    """``epoch_two``'s work in sequence on one thread: the same bits."""
    n = order.shape[0]
    for start in range(0, n, bs):
        k = min(bs, n - start)
        for phase in range(2):
            for t in range(2):
                _part(phase, np.int64(t), x, scale, order, y_ord, start, k, cut, lr, mom,
                      nesterov, plain, net, buf, pt, pred)


def _rows_in(x, s, e, scale, buf):
    """Rows ``x[s:e]`` as float32 times ``scale``: converted into ``buf``, or for float32 rows
    with scale 1, ``x[s:e]`` itself."""
    raise NotImplementedError("only for compiled code")


@kernel(nogil=True)
def _convert_rows(x, s, e, scale, buf):
    for r in range(e - s):
        for c in range(x.shape[1]):
            buf[r, c] = np.float32(x[s + r, c]) * scale
    return buf[: e - s]


def _rows_in_compiled(x, s, e, scale, buf):
    """``_rows_in`` for numba (registered by ``load``), chosen by the type of ``x``."""
    from numba import types

    if x.dtype != types.float32:
        return lambda x, s, e, scale, buf: _convert_rows(x, s, e, scale, buf)
    return lambda x, s, e, scale, buf: (
        x[s:e] if scale == 1 else _convert_rows(x, s, e, scale, buf)
    )


@kernel(nogil=True)
def forward_rows(x, scale, w_flat, layout, acts, chunk, out):
    """Softmax probabilities of rows ``x`` into ``out``, ``chunk`` rows at a time (each chunk's
    pixels are converted into a scratch that is still in cache for the first product). Each
    chunk's numbers do not depend on the rest, so splitting ``x`` at multiples of ``chunk``
    gives the same bits. Releases the GIL."""
    n = x.shape[0]
    rows = min(chunk, n)
    last = layout.shape[0] - 1
    widths = 1
    for j in range(last):
        widths += layout[j, 2]
    buf = np.empty((rows, x.shape[1]), np.float32)
    hidden = np.empty(rows * widths, np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        a = _rows_in(x, s, e, scale, buf)
        off = 0
        for j in range(last):
            h = hidden[off : off + (e - s) * layout[j, 2]].reshape(e - s, layout[j, 2])
            off += (e - s) * layout[j, 2]
            _mm(False, False, 1.0, a, _kernel(w_flat, layout, j), 0.0, h)
            _bias_act(h, _bias(w_flat, layout, j), acts[j])
            a = h
        _mm(False, False, 1.0, a, _kernel(w_flat, layout, last), 0.0, out[s:e])
        _softmax_rows(out[s:e], _bias(w_flat, layout, last))


@kernel(parallel=True, nogil=True)
def forward_two(x, scale, w_flat, layout, acts, chunk, half, out):
    """``forward_rows`` on rows ``[0, half)`` and ``[half, n)`` at once on numba's two threads
    (``half`` a multiple of ``chunk``: the same bits as one call). The training loop's validation:
    a helper thread beside numba's second thread (which waits busily for a while after a parallel
    loop) took 25.9 ms for 18,000 rows right after an epoch's loop, 19.3 ms after a pause."""
    n = x.shape[0]
    for t in prange(2):
        s, e = (0, half) if t == 0 else (half, n)
        forward_rows(x[s:e], scale, w_flat, layout, acts, chunk, out[s:e])


def compiled_before(*names: str, stage: str = "complete") -> bool:
    """Are these kernels (default: those of ``stage``) all in the cache, compiled from this file's
    current text (so the next call loads them instead of compiling)?

    ``engine.warm`` marks each stage (``STAGES``) once it has built its kernels, under the sha256
    of this file's text, as numba keys its cache (not the file's time: a fresh checkout of the same
    code reuses the cache). "loop": what the training loop needs to leave the numpy replica;
    "complete": every training kernel (``TRAINING``)."""
    folder = _cache_folder()
    marked = _marker(folder, stage).is_file() or _marker(folder, "complete").is_file()
    return (folder.is_dir() and marked
            and all(any(folder.glob(f"kernels.{name}-*.nbi")) for name in names or STAGES[stage]))


def mark_compiled(stage: str = "complete") -> None:
    """Record that the kernels of ``stage`` (this file's text) are in the cache."""
    folder = _cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    _marker(folder, stage).touch()


def _cache_folder() -> Path:
    k = load()
    try:
        return Path(k.epoch_two._cache._cache_path)  # numba's own place for this source file
    except AttributeError:  # another numba: its cache root
        return Path(k.numba.config.CACHE_DIR)


def _marker(folder: Path, stage: str) -> Path:
    import hashlib

    return folder / f"{stage}-{hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]}"


# what ``mnistlab train``'s loop calls; the first three (float32 rows for ``forward_rows``) are
# enough to leave the replica: validation waits for ``forward_two`` on the helper thread's path
TRAINING = ("epoch_two", "epoch_one", "forward_rows", "forward_two")
STAGES = {"loop": TRAINING[:3], "complete": TRAINING}


def parallel_threads() -> int:
    """How many threads the ``*_two`` kernels may use: 2, or 1 when this machine has a single
    core or numba has no fast threading layer (OpenMP or TBB)."""
    k = load()
    numba = k.numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        return 1
    try:
        k.probe(np.zeros(2))
        layer = numba.threading_layer()
    except (ValueError, ImportError, OSError):
        return 1
    if layer not in ("omp", "tbb"):
        return 1
    numba.set_num_threads(2)
    return 2


@kernel(parallel=True)
def _probe(a):
    for i in prange(a.shape[0]):
        a[i] += 1
