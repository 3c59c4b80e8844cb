"""Compiled (numba) kernels of the conv engine: one training step, and the forward pass.

Importing this module compiles nothing: numba compiles each kernel on its first call and keeps the
machine code in a cache folder (``$XDG_CACHE_HOME/mnistlab/numba/...``, or ``NUMBA_CACHE_DIR``),
so later processes load it in about a second (``compiled_before`` tells which case it is).

The network is a list of layers described by an int64 ``layout`` of shape ``(L, NCOLS)`` (the
column names are the module constants ``KIND`` ... ``DCOLS``; ``mnistlab.engine.conv_plan``
fills it) plus flat float32 parameters. Activations are NHWC and live in a per-worker float32
scratch row, at the offsets the layout gives; pooling remembers the argmax of every window (int32
scratch) for the backward pass.

A batch is cut into chunks of ``chunk`` rows. Each worker thread takes chunks ``w, w + T, ...``
and runs the whole forward and backward pass of a chunk in its own scratch (small enough to stay
in cache): a 3x3 convolution with 8+ input channels (``layout[:, WINO] >= 0``) is Winograd
F(2x2, 3x3), 16 ``cblas_sgemm`` calls per chunk (see its section below), any other one im2col +
one ``cblas_sgemm`` (numpy's OpenBLAS, one thread per call; ``_mm`` cuts a product just over
OpenBLAS's small-matrix limit in pieces under it). Each chunk writes its own gradient row; the
rows are then summed in chunk order, so the result does not depend on the number of threads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mnistlab.engine.blas import Threads
from mnistlab.engine.conv_codes import CONV, DENSE, LINEAR, POOL, RELU, SOFTMAX  # noqa: F401

_THREADS = Threads()
if _THREADS.sgemm_address is None:
    raise ImportError("numpy is not linked to an OpenBLAS with cblas_sgemm")

import llvmlite.binding as _llvm  # noqa: E402
import numba  # noqa: E402
from numba import njit, prange, types  # noqa: E402

# layout columns
KIND, H, W, CI, HO, WO, CO, KH, KW, PT, PL = range(11)
WOFF, BOFF, ACT, OUT, DOUT, IN, DIN, AUX, MOFF, RELU_DONE, DCOLS, FUSED, WINO = range(11, 24)
NCOLS = 24


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mnistlab/numba/<numpy version>-<abi>``: the cached code calls into
    numpy's own OpenBLAS, so its version and integer size are part of the name."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    abi = "ilp64" if _THREADS.sgemm_int64 else "lp64"
    return Path(base) / "mnistlab" / "numba" / f"numpy{np.__version__}-{abi}"


if not os.environ.get("NUMBA_CACHE_DIR"):
    numba.config.CACHE_DIR = str(cache_dir())
if not os.environ.get("NUMBA_THREADING_LAYER"):
    # OpenMP starts a parallel region in ~1.5 us; numba's "workqueue" fallback takes ~90 us.
    numba.config.THREADING_LAYER = "omp"

_llvm.add_symbol("mnistlab_conv_cblas_sgemm", _THREADS.sgemm_address)
_I = types.int64 if _THREADS.sgemm_int64 else types.int32
_P = types.uintp
_sgemm = types.ExternalFunction(
    "mnistlab_conv_cblas_sgemm",
    types.void(types.int32, types.int32, types.int32, _I, _I, _I, types.float32, _P, _I, _P, _I,
               types.float32, _P, _I),
)


# OpenBLAS runs products of at most 100^3 multiply-adds (M*N*K) through its small-matrix kernels,
# without packing; at the engine's shapes those ran up to 2x faster than one packed product of
# twice the size (a first layer's 5408x9x32: 54 us whole, 26 us in two halves; one thread,
# ``bench/conv_step.py``)
SMALL = 1_000_000


@njit(cache=True)
def _mm(ta, tb, a, b, c):
    """``c = op(a) @ op(b)`` for C-contiguous float32 2-D arrays (op: transpose if ``ta``/``tb``).
    A product of up to 4x ``SMALL`` multiply-adds is cut into pieces of at most ``SMALL``: rows of
    ``c``, or (``ta``) the summed dimension, the pieces added into ``c`` in order."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        c[:] = 0
        return
    cut = k if ta else m
    per = m * n * k // cut  # multiply-adds per row of the cut dimension
    pieces = 1
    if SMALL < per * cut <= 4 * SMALL and per <= SMALL:
        pieces = (cut + SMALL // per - 1) // (SMALL // per)
    step = (cut + pieces - 1) // pieces
    lda, ldb, ldc = a.shape[1], b.shape[1], c.shape[1]
    for p in range(0, cut, step):
        q = min(cut, p + step)
        if ta:  # rows p:q of a and b, summed into c
            _sgemm(101, 112, 112 if tb else 111, m, n, q - p, np.float32(1.0),
                   a[p:q].ctypes.data, lda, b[:, p:q].ctypes.data if tb else b[p:q].ctypes.data,
                   ldb, np.float32(1.0 if p else 0.0), c.ctypes.data, ldc)
        else:  # rows p:q of a and c
            _sgemm(101, 111, 112 if tb else 111, q - p, n, k, np.float32(1.0), a[p:q].ctypes.data,
                   lda, b.ctypes.data, ldb, np.float32(0.0), c[p:q].ctypes.data, ldc)


# --------------------------------------------------------------------------- Winograd F(2x2, 3x3)
# A 3x3 convolution as 16 products per 4x4 input tile giving a 2x2 output tile (Lavin & Gray,
# 2015): ``Y = A^T [(G g G^T) * (B^T d B)] A``, the products summed over the input channels as
# 16 matrix products (tiles x ci) @ (ci x co): 2.25x fewer multiply-adds than im2col's one.
#   B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
#   G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
#   A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
# Scratch (``wino_sizes``): the transformed kernel ``U``, its gradient ``dU`` (16 rows of ci x co;
# WINO offset) and ``U`` transposed (``UT``, 16 rows of co x ci), the transformed inputs ``V`` (16
# rows of tiles x ci; AUX; their gradient dV overwrites them), the products ``M`` (16 rows of tiles
# x co; DCOLS; their gradient dM too). Element ``[k, tile, c]`` is at ``[k, tile * c_count + c]``;
# each row is padded by ``PAD`` floats, so that the 16 streams a transform writes side by side are
# not a multiple of 4 KiB apart (the same L1 cache sets). Tiles: ``(image, ty, tx)``, ``ceil(HO/2) x
# ceil(WO/2)`` per image; the outputs past ``HO``/``WO`` are computed and dropped.
PAD = 16


def wino_sizes(ci: int, co: int, tiles: int) -> tuple[int, int, int]:
    """Floats of scratch for ``U`` + ``dU`` + ``UT``, ``V`` and ``M`` (see above)."""
    return 48 * (ci * co + PAD), 16 * (tiles * ci + PAD), 16 * (tiles * co + PAD)


@njit(cache=True)
def _rows(s, off, count):
    """16 padded rows of ``count`` floats from scratch ``s`` at ``off``."""
    return s[off : off + 16 * (count + PAD)].reshape(16, count + PAD)


@njit(cache=True)
def _wino_kernel(wk, ci, co, U):
    """``U[4*xi + nu, (c, o)] = (G g G^T)[xi, nu]`` of each 3x3 kernel ``g = wk[(dy, dx, c), o]``."""
    half = np.float32(0.5)
    t = np.empty((4, 3, co), np.float32)
    for c in range(ci):
        for j in range(3):
            g0, g1, g2 = wk[j * ci + c], wk[(3 + j) * ci + c], wk[(6 + j) * ci + c]
            for o in range(co):
                t[0, j, o] = g0[o]
                t[1, j, o] = (g0[o] + g1[o] + g2[o]) * half
                t[2, j, o] = (g0[o] - g1[o] + g2[o]) * half
                t[3, j, o] = g2[o]
        for xi in range(4):
            u0, u1 = U[4 * xi, c * co : (c + 1) * co], U[4 * xi + 1, c * co : (c + 1) * co]
            u2, u3 = U[4 * xi + 2, c * co : (c + 1) * co], U[4 * xi + 3, c * co : (c + 1) * co]
            for o in range(co):
                a0, a1, a2 = t[xi, 0, o], t[xi, 1, o], t[xi, 2, o]
                u0[o] = a0
                u1[o] = (a0 + a1 + a2) * half
                u2[o] = (a0 - a1 + a2) * half
                u3[o] = a2


@njit(cache=True)
def _wino_kernel_back(dU, ci, co, gw):
    """The adjoint of ``_wino_kernel``: ``gw[(dy, dx, c), o] = (G^T dU G)[dy, dx]``."""
    half = np.float32(0.5)
    r = np.empty((4, 3, co), np.float32)
    for c in range(ci):
        for xi in range(4):
            d0, d1 = dU[4 * xi, c * co : (c + 1) * co], dU[4 * xi + 1, c * co : (c + 1) * co]
            d2, d3 = dU[4 * xi + 2, c * co : (c + 1) * co], dU[4 * xi + 3, c * co : (c + 1) * co]
            for o in range(co):
                r[xi, 0, o] = d0[o] + (d1[o] + d2[o]) * half
                r[xi, 1, o] = (d1[o] - d2[o]) * half
                r[xi, 2, o] = (d1[o] + d2[o]) * half + d3[o]
        for j in range(3):
            g0, g1, g2 = gw[j * ci + c], gw[(3 + j) * ci + c], gw[(6 + j) * ci + c]
            for o in range(co):
                r0, r1, r2, r3 = r[0, j, o], r[1, j, o], r[2, j, o], r[3, j, o]
                g0[o] = r0 + (r1 + r2) * half
                g1[o] = (r1 - r2) * half
                g2[o] = (r1 + r2) * half + r3


@njit(cache=True)
def _wino_in(a, n, h, w, ci, th, tw, pt, pl, V):
    """``V[4*xi + nu, (tile, c)] = (B^T d B)[xi, nu]`` of each tile's 4x4 input patch ``d``
    (rows ``2*ty - pt ...``, zeros outside the image) of NHWC ``a`` (flat)."""
    d = np.empty((4, 4, ci), np.float32)
    t = np.empty((4, 4, ci), np.float32)
    u, uci = np.uint64, np.uint64(ci)
    for i in range(n):
        for ty in range(th):
            for tx in range(tw):
                col = ((i * th + ty) * tw + tx) * ci
                for r in range(4):
                    y = 2 * ty - pt + r
                    for q in range(4):
                        x = 2 * tx - pl + q
                        if 0 <= y < h and 0 <= x < w:
                            src = u((i * h + y) * w + x) * uci
                            for c in range(ci):
                                d[r, q, c] = a[src + u(c)]
                        else:
                            for c in range(ci):
                                d[r, q, c] = 0
                for q in range(4):
                    for c in range(ci):
                        d0, d1, d2, d3 = d[0, q, c], d[1, q, c], d[2, q, c], d[3, q, c]
                        t[0, q, c] = d0 - d2
                        t[1, q, c] = d1 + d2
                        t[2, q, c] = d2 - d1
                        t[3, q, c] = d1 - d3
                for xi in range(4):
                    v0, v1 = V[4 * xi, col : col + ci], V[4 * xi + 1, col : col + ci]
                    v2, v3 = V[4 * xi + 2, col : col + ci], V[4 * xi + 3, col : col + ci]
                    for c in range(ci):
                        x0, x1, x2, x3 = t[xi, 0, c], t[xi, 1, c], t[xi, 2, c], t[xi, 3, c]
                        v0[c] = x0 - x2
                        v1[c] = x1 + x2
                        v2[c] = x2 - x1
                        v3[c] = x1 - x3


@njit(cache=True)
def _wino_in_back(dV, n, h, w, ci, th, tw, pt, pl, da):
    """The adjoint of ``_wino_in``: ``da`` (flat NHWC, overwritten) = the sum over tiles of
    ``B dV B^T`` on each tile's patch, tiles added in order."""
    da[:] = 0
    f = np.empty((4, 4, ci), np.float32)
    u, uci = np.uint64, np.uint64(ci)
    for i in range(n):
        for ty in range(th):
            for tx in range(tw):
                col = ((i * th + ty) * tw + tx) * ci
                for xi in range(4):
                    v0, v1 = dV[4 * xi, col : col + ci], dV[4 * xi + 1, col : col + ci]
                    v2, v3 = dV[4 * xi + 2, col : col + ci], dV[4 * xi + 3, col : col + ci]
                    for c in range(ci):
                        f[xi, 0, c] = v0[c]
                        f[xi, 1, c] = v1[c] - v2[c] + v3[c]
                        f[xi, 2, c] = v2[c] + v1[c] - v0[c]
                        f[xi, 3, c] = -v3[c]
                for q in range(4):
                    x = 2 * tx - pl + q
                    if x < 0 or x >= w:
                        continue
                    for r in range(4):
                        y = 2 * ty - pt + r
                        if y < 0 or y >= h:
                            continue
                        dst = u((i * h + y) * w + x) * uci
                        for c in range(ci):
                            f0, f1, f2, f3 = f[0, q, c], f[1, q, c], f[2, q, c], f[3, q, c]
                            if r == 0:
                                g = f0
                            elif r == 1:
                                g = f1 - f2 + f3
                            elif r == 2:
                                g = f2 + f1 - f0
                            else:
                                g = -f3
                            da[dst + u(c)] += g


@njit(cache=True)
def _wino_out(M, n, th, tw, ho, wo, co, out):
    """Output tiles ``A^T m A`` of the products ``M`` into NHWC ``out`` (flat, ``(n, ho, wo,
    co)``), dropping the outputs past ``ho``/``wo``."""
    s = np.empty((2, 4, co), np.float32)
    u, uco = np.uint64, np.uint64(co)
    for i in range(n):
        for ty in range(th):
            for tx in range(tw):
                col = ((i * th + ty) * tw + tx) * co
                for nu in range(4):
                    m0, m1 = M[nu, col : col + co], M[4 + nu, col : col + co]
                    m2, m3 = M[8 + nu, col : col + co], M[12 + nu, col : col + co]
                    for o in range(co):
                        s[0, nu, o] = m0[o] + m1[o] + m2[o]
                        s[1, nu, o] = m1[o] - m2[o] - m3[o]
                for a in range(2):
                    y = 2 * ty + a
                    if y >= ho:
                        continue
                    for b in range(2):
                        x = 2 * tx + b
                        if x >= wo:
                            continue
                        dst = u((i * ho + y) * wo + x) * uco
                        for o in range(co):
                            s0, s1, s2, s3 = s[a, 0, o], s[a, 1, o], s[a, 2, o], s[a, 3, o]
                            out[dst + u(o)] = s0 + s1 + s2 if b == 0 else s1 - s2 - s3


@njit(cache=True)
def _wino_out_back(dy, n, th, tw, ho, wo, co, dM):
    """The adjoint of ``_wino_out``: ``dM = A dY A^T`` per tile (outputs past ``ho``/``wo``
    have no gradient). Whole tiles read ``dy`` in place; written out per ``nu`` (copying each
    tile's gradients first, or one loop for all 16 rows, measured 2x slower)."""
    g = np.zeros((4, co), np.float32)  # an edge tile's 2x2 output gradients, zeros past the edge
    for i in range(n):
        for ty in range(th):
            for tx in range(tw):
                y, x = 2 * ty, 2 * tx
                if y + 1 < ho and x + 1 < wo:
                    r0 = ((i * ho + y) * wo + x) * co
                    r1 = r0 + wo * co
                    a0, a1 = dy[r0 : r0 + co], dy[r0 + co : r0 + 2 * co]
                    b0, b1 = dy[r1 : r1 + co], dy[r1 + co : r1 + 2 * co]
                else:
                    for k in range(4):
                        yy, xx = y + k // 2, x + k % 2
                        r = ((i * ho + yy) * wo + xx) * co
                        for o in range(co):
                            g[k, o] = dy[r + o] if yy < ho and xx < wo else np.float32(0)
                    a0, a1, b0, b1 = g[0], g[1], g[2], g[3]
                # e = dY A^T per output row (a: top, b: bottom): (y0, y0 + y1, y0 - y1, -y1)
                # for nu = 0..3; then dM[4*xi + nu] = (A e)[xi] = (e0, e0 + e1, e0 - e1, -e1)
                col = ((i * th + ty) * tw + tx) * co
                d0, d4 = dM[0, col : col + co], dM[4, col : col + co]
                d8, d12 = dM[8, col : col + co], dM[12, col : col + co]
                for o in range(co):
                    e0, e1 = a0[o], b0[o]
                    d0[o], d4[o], d8[o], d12[o] = e0, e0 + e1, e0 - e1, -e1
                d0, d4 = dM[1, col : col + co], dM[5, col : col + co]
                d8, d12 = dM[9, col : col + co], dM[13, col : col + co]
                for o in range(co):
                    e0, e1 = a0[o] + a1[o], b0[o] + b1[o]
                    d0[o], d4[o], d8[o], d12[o] = e0, e0 + e1, e0 - e1, -e1
                d0, d4 = dM[2, col : col + co], dM[6, col : col + co]
                d8, d12 = dM[10, col : col + co], dM[14, col : col + co]
                for o in range(co):
                    e0, e1 = a0[o] - a1[o], b0[o] - b1[o]
                    d0[o], d4[o], d8[o], d12[o] = e0, e0 + e1, e0 - e1, -e1
                d0, d4 = dM[3, col : col + co], dM[7, col : col + co]
                d8, d12 = dM[11, col : col + co], dM[15, col : col + co]
                for o in range(co):
                    e0, e1 = -a1[o], -b1[o]
                    d0[o], d4[o], d8[o], d12[o] = e0, e0 + e1, e0 - e1, -e1


@njit(cache=True)
def _wino_views(s, ly, n):
    """``U``, ``dU``, ``UT``, ``V``, ``M`` of a Winograd layer in scratch ``s``, and its tile
    count."""
    ci, co = ly[CI], ly[CO]
    tiles = n * ((ly[HO] + 1) // 2) * ((ly[WO] + 1) // 2)
    step = 16 * (ci * co + PAD)
    U, dU = _rows(s, ly[WINO], ci * co), _rows(s, ly[WINO] + step, ci * co)
    UT = _rows(s, ly[WINO] + 2 * step, ci * co)
    return U, dU, UT, _rows(s, ly[AUX], tiles * ci), _rows(s, ly[DCOLS], tiles * co), tiles


@njit(cache=True)
def _wino_forward(a, n, ly, params, s, z, fresh):
    """A 3x3 convolution of ``a`` into ``z`` ``(n*HO*WO, CO)`` by Winograd (no bias); the kernel
    is transformed (``U``, and ``UT`` for the backward pass) only when ``fresh`` (else they hold
    it from the worker's previous chunk)."""
    ci, co, th, tw = ly[CI], ly[CO], (ly[HO] + 1) // 2, (ly[WO] + 1) // 2
    U, _, UT, V, M, tiles = _wino_views(s, ly, n)
    wk = params[ly[WOFF] : ly[WOFF] + 9 * ci * co].reshape(9 * ci, co)
    if fresh:
        _wino_kernel(wk, ci, co, U)
        for k in range(16):
            for c in range(ci):
                for o in range(co):
                    UT[k, o * ci + c] = U[k, c * co + o]
    _wino_in(a, n, ly[H], ly[W], ci, th, tw, ly[PT], ly[PL], V)
    for k in range(16):
        _mm(False, False, V[k, : tiles * ci].reshape(tiles, ci), U[k, : ci * co].reshape(ci, co),
            M[k, : tiles * co].reshape(tiles, co))
    _wino_out(M, n, th, tw, ly[HO], ly[WO], co, z.ravel())


@njit(cache=True)
def _wino_backward(dz, n, ly, s, gw, da, has_din):
    """Kernel gradient ``gw`` ``(9*CI, CO)`` and (``has_din``) input gradient ``da`` of a
    Winograd convolution whose forward pass left ``UT`` and ``V`` in ``s``."""
    ci, co, th, tw = ly[CI], ly[CO], (ly[HO] + 1) // 2, (ly[WO] + 1) // 2
    _, dU, UT, V, dM, tiles = _wino_views(s, ly, n)
    _wino_out_back(dz.ravel(), n, th, tw, ly[HO], ly[WO], co, dM)
    for k in range(16):
        _mm(True, False, V[k, : tiles * ci].reshape(tiles, ci),
            dM[k, : tiles * co].reshape(tiles, co), dU[k, : ci * co].reshape(ci, co))
    _wino_kernel_back(dU, ci, co, gw)
    if has_din:
        # dV = dM U^T, over V (no longer needed), on U transposed: the plain product measured
        # 1.6x faster than a transposed one
        for k in range(16):
            _mm(False, False, dM[k, : tiles * co].reshape(tiles, co),
                UT[k, : ci * co].reshape(co, ci), V[k, : tiles * ci].reshape(tiles, ci))
        _wino_in_back(V, n, ly[H], ly[W], ci, th, tw, ly[PT], ly[PL], da)


# --------------------------------------------------------------------------- forward pieces
@njit(cache=True)
def _load(x, idx, r0, n, scale, dst):
    """Rows ``idx[r0:r0+n]`` of ``x`` (uint8 or float32, ``(N, D)``) times ``scale`` -> ``dst``."""
    d = x.shape[1]
    u = np.uint64
    for i in range(n):
        src = x[idx[r0 + i]]
        base = u(i * d)
        for j in range(d):
            dst[base + u(j)] = np.float32(src[u(j)]) * scale


@njit(cache=True)
def _im2col(a, n, h, w, ci, ho, wo, kh, kw, pt, pl, cols):
    """Patches of NHWC ``a`` (flat) -> ``cols`` ``(n*ho*wo, kh*kw*ci)``, column order (dy, dx, c)
    like a Keras kernel ``(kh, kw, ci, co)`` reshaped; zeros outside the image (padding).

    Indices are unsigned (numba adds a negative-index check to every signed one). One kernel row
    of a patch is a contiguous run of ``kw * ci`` inputs: long runs are copied as runs; short
    ones (a first layer's 3 pixels) column by column along the output row, which measured 2.5x
    faster than short runs."""
    k = kh * kw * ci
    run = kw * ci
    flat = cols.ravel()
    u, uk, uci = np.uint64, np.uint64(k), np.uint64(ci)
    for i in range(n):
        for oy in range(ho):
            r0 = u((i * ho + oy) * wo)
            for dy in range(kh):
                y = oy + dy - pt
                if y < 0 or y >= h:
                    for r in range(wo):
                        for t in range(run):
                            flat[(r0 + u(r)) * uk + u(dy * run + t)] = 0
                    continue
                row = u((i * h + y) * w)
                if run >= 8:
                    for ox in range(wo):
                        dst = (r0 + u(ox)) * uk + u(dy * run)
                        x0 = ox - pl
                        if x0 >= 0 and x0 + kw <= w:
                            src = (row + u(x0)) * uci
                            for t in range(run):
                                flat[dst + u(t)] = a[src + u(t)]
                            continue
                        for dx in range(kw):
                            xx = x0 + dx
                            for c in range(ci):
                                ok = 0 <= xx < w
                                flat[dst + u(dx * ci + c)] = a[(row + u(xx)) * uci + u(c)] if ok else 0
                    continue
                for dx in range(kw):
                    lo, hi = max(0, pl - dx), min(wo, w + pl - dx)
                    for c in range(ci):
                        col = u((dy * kw + dx) * ci + c)
                        for ox in range(lo):
                            flat[(r0 + u(ox)) * uk + col] = 0
                        for ox in range(hi, wo):
                            flat[(r0 + u(ox)) * uk + col] = 0
                        dst = (r0 + u(lo)) * uk + col
                        src = (row + u(lo + dx - pl)) * uci + u(c)
                        for _ in range(hi - lo):
                            flat[dst] = a[src]
                            dst += uk
                            src += uci


@njit(cache=True)
def _col2im(dcols, n, h, w, ci, ho, wo, kh, kw, pt, pl, da):
    """The adjoint of ``_im2col``: ``da`` (flat NHWC, overwritten) = sum of the patch gradients.
    Gathered per input pixel in a local vector (one write per pixel), adding the patches in the
    order a scatter over the output pixels would (later patches first in (dy, dx))."""
    acc = np.empty(ci, np.float32)
    flat = dcols.ravel()
    u, uk = np.uint64, np.uint64(kh * kw * ci)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                for c in range(ci):
                    acc[c] = 0
                for dy in range(kh - 1, -1, -1):
                    oy = y - dy + pt
                    if oy < 0 or oy >= ho:
                        continue
                    for dx in range(kw - 1, -1, -1):
                        ox = x - dx + pl
                        if ox < 0 or ox >= wo:
                            continue
                        src = u((i * ho + oy) * wo + ox) * uk + u((dy * kw + dx) * ci)
                        for c in range(ci):
                            acc[c] += flat[src + u(c)]
                dst = u(((i * h + y) * w + x) * ci)
                for c in range(ci):
                    da[dst + u(c)] = acc[c]


@njit(cache=True)
def _bias_act(z, b, act):
    """``z = act(z + b)`` in place, rows of ``z`` ``(R, C)``; softmax per row."""
    rows, cols = z.shape
    nb = b.shape[0]
    for r in range(rows):
        for c in range(cols):
            v = z[r, c] + b[c] if nb else z[r, c]
            if act == RELU and v < 0:
                v = np.float32(0)
            z[r, c] = v
        if act == SOFTMAX:
            top = z[r, 0]
            for c in range(cols):
                top = max(top, z[r, c])
            total = np.float32(0)
            for c in range(cols):
                e = np.exp(z[r, c] - top)
                z[r, c] = e
                total += e
            for c in range(cols):
                z[r, c] = z[r, c] / total


@njit(cache=True)
def _pool(a, n, h, w, c, ho, wo, ph, pw, b, act, out, arg):
    """Max pooling (windows ``ph x pw``, same strides, valid) with each output's argmax (an index
    into ``a``) in ``arg``; then ``act(max + b)`` when the pooled layer left those to the pool
    (``b`` empty and ``act`` LINEAR otherwise). The max commutes with bias and relu."""
    if ph == 2 and pw == 2:
        _pool2x2(a, n, h, w, c, ho, wo, b, act, out, arg)
        return
    nb = b.shape[0]
    # running max and argmax over the channels in local arrays: branch-free selects that LLVM
    # turns into vector code (3x faster than updating ``out``/``arg`` in place); unsigned
    # indices (2.5x faster than signed ones, which numba checks for wrap-around)
    best = np.empty(c, np.float32)
    at = np.empty(c, np.int32)
    u, uc = np.uint64, np.uint64(c)
    for i in range(n):
        for oy in range(ho):
            for ox in range(wo):
                o = u((i * ho + oy) * wo + ox) * uc
                first = u((i * h + oy * ph) * w + ox * pw) * uc
                for k in range(c):
                    best[k] = a[first + u(k)]
                    at[k] = np.int32(first + u(k))
                for dy in range(ph):
                    for dx in range(pw):
                        if dy == 0 and dx == 0:
                            continue
                        src = u((i * h + oy * ph + dy) * w + ox * pw + dx) * uc
                        for k in range(c):
                            v = a[src + u(k)]
                            m = v > best[k]
                            best[k] = v if m else best[k]
                            at[k] = np.int32(src + u(k)) if m else at[k]
                for k in range(c):
                    v = best[k] + b[k] if nb else best[k]
                    if act == RELU and v < 0:
                        v = np.float32(0)
                    out[o + u(k)] = v
                    arg[o + u(k)] = at[k]


@njit(cache=True)
def _pool2x2(a, n, h, w, c, ho, wo, b, act, out, arg):
    """``_pool`` for 2x2 windows: the four inputs of a channel compared in registers, one loop
    over the channels per window (3x faster than the general loop's local arrays)."""
    nb = b.shape[0]
    u, uc = np.uint64, np.uint64(c)
    for i in range(n):
        for oy in range(ho):
            for ox in range(wo):
                o = u((i * ho + oy) * wo + ox) * uc
                s0 = u((i * h + oy * 2) * w + ox * 2) * uc
                s1, s2 = s0 + uc, s0 + u(w) * uc
                s3 = s2 + uc
                for k in range(c):
                    uk = u(k)
                    best = a[s0 + uk]
                    at = s0 + uk
                    for src in (s1, s2, s3):  # unrolled by numba: the window in Keras' order
                        v = a[src + uk]
                        m = v > best
                        best = v if m else best
                        at = src + uk if m else at
                    if nb:
                        best = best + b[k]
                    if act == RELU and best < 0:
                        best = np.float32(0)
                    out[o + uk] = best
                    arg[o + uk] = np.int32(at)


@njit(cache=True)
def _kept(drop, pos, unit, keep):
    """Is dropout unit ``unit`` (numbered across all dropout layers) of the sample at position
    ``pos`` of the epoch's order kept? A counter-based draw: splitmix64 of the epoch's key
    ``drop[0]`` stepped ``pos * drop[2] + unit`` times, its top 24 bits as a uniform number in
    [0, 1), kept when ``>= 1 - keep`` (as ``keras.random.dropout``). Any thread, any chunk, the
    same mask."""
    z = np.uint64(drop[0]) + (np.uint64(pos) * np.uint64(drop[2]) + np.uint64(unit)) * np.uint64(
        0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float32(z >> np.uint64(40)) * np.float32(2.0**-24) >= np.float32(1) - keep


@njit(cache=True)
def _dropout(a, drop, r0, n, moff, keep):
    """Inverted dropout in place, Keras' way: kept values divided by ``keep``, the rest 0.
    ``drop`` = (epoch key, position of the batch's first row in the epoch, units per sample)."""
    d = a.shape[0] // n if n else 0
    u = np.uint64
    for i in range(n):
        base = u(i * d)
        pos = drop[1] + r0 + i
        for j in range(d):
            if _kept(drop, pos, moff + j, keep):
                a[base + u(j)] = a[base + u(j)] / keep
            else:
                a[base + u(j)] = 0


@njit(cache=True)
def forward_chunk(x, idx, r0, n, scale, params, layout, keep, drop, s, si, fresh):
    """Forward pass of rows ``idx[r0:r0+n]`` in worker scratch ``s`` (float32) / ``si`` (int32);
    with a ``drop`` key (training; ``_dropout``) the dropout layers apply. Leaves probabilities at
    the last layer's ``OUT`` offset, ``(n, classes)``. ``fresh``: the worker's first chunk since
    ``params`` changed (the Winograd kernels are transformed then, and kept for its later
    chunks)."""
    _load(x, idx, r0, n, scale, s[layout[0, IN] :])
    for j in range(layout.shape[0]):
        ly = layout[j]
        h, w, ci, ho, wo, co = ly[H], ly[W], ly[CI], ly[HO], ly[WO], ly[CO]
        a = s[ly[IN] : ly[IN] + n * h * w * ci]
        if ly[MOFF] >= 0 and drop.shape[0]:
            _dropout(a, drop, r0, n, ly[MOFF], keep[j])
        out = s[ly[OUT] : ly[OUT] + n * ho * wo * co]
        if ly[KIND] == POOL:
            arg = si[ly[AUX] : ly[AUX] + n * ho * wo * co]
            b = params[ly[BOFF] : ly[BOFF] + ci] if ly[BOFF] >= 0 else params[:0]
            _pool(a, n, h, w, ci, ho, wo, ly[KH], ly[KW], b, ly[ACT], out, arg)
            continue
        k = ly[KH] * ly[KW] * ci
        wk = params[ly[WOFF] : ly[WOFF] + k * co].reshape(k, co)
        b = params[ly[BOFF] : ly[BOFF] + co] if ly[BOFF] >= 0 else params[:0]
        z = out.reshape(n * ho * wo, co)
        if ly[KIND] == CONV and ly[WINO] >= 0:
            _wino_forward(a, n, ly, params, s, z, fresh)
        elif ly[KIND] == CONV:
            cols = s[ly[AUX] : ly[AUX] + n * ho * wo * k].reshape(n * ho * wo, k)
            _im2col(a, n, h, w, ci, ho, wo, ly[KH], ly[KW], ly[PT], ly[PL], cols)
            _mm(False, False, cols, wk, z)
        else:
            _mm(False, False, a.reshape(n, k), wk, z)
        if ly[FUSED] == 0:
            _bias_act(z, b, ly[ACT])


# --------------------------------------------------------------------------- backward pieces
@njit(cache=True)
def _loss_grad(p, y, idx, r0, inv_n, target, dz):
    """Keras' categorical cross-entropy on probabilities ``p`` ``(n, C)`` against targets
    ``target[0] * onehot + target[1]`` (label smoothing: ``1 - s`` and ``s / C``; no smoothing:
    1 and 0). Returns (loss sum, correct count) and writes the gradient with respect to the
    softmax's inputs, ``(p * T - target) * inv_n``, where a class the 1e-7 clip holds has no
    gradient of its own and ``T`` sums the targets of the classes it leaves alone (no smoothing:
    ``p - onehot``, or 0 when the label's class is clipped)."""
    lo, hi = np.float32(1e-7), np.float32(1 - 1e-7)
    on, off = target[0], target[1]
    rows, cols = p.shape
    loss, correct = 0.0, 0
    for r in range(rows):
        t = y[idx[r0 + r]]
        total = np.float32(0)
        best = 0
        for c in range(cols):
            total += p[r, c]
            if p[r, c] > p[r, best]:
                best = c
        correct += best == t
        kept = np.float32(0)
        for c in range(cols):
            tc = on + off if c == t else off
            q = p[r, c] / total
            if tc != 0:
                loss -= tc * np.log(min(max(q, lo), hi))
            if lo < q < hi:
                kept += tc
        for c in range(cols):
            tc = on + off if c == t else off
            q = p[r, c] / total
            g = p[r, c] * kept - (tc if lo < q < hi else np.float32(0))
            dz[r, c] = g * inv_n
    return loss, correct


@njit(cache=True)
def _col_sums(z, out):
    """``out = z.sum(0)``, accumulated in a local array (vector code; ``out`` may alias)."""
    rows, cols = z.shape
    acc = np.zeros(cols, np.float32)
    for r in range(rows):
        for c in range(cols):
            acc[c] += z[r, c]
    out[:] = acc


@njit(cache=True)
def _relu_back(dz, z):
    for i in range(dz.shape[0]):
        if z[i] <= 0:
            dz[i] = 0


@njit(cache=True)
def _unpool(dout, arg, out, relu, da):
    """Route each pooled gradient to its window's argmax in ``da`` (overwritten); with ``relu``
    (the pooled layer was relu) only where that maximum (the pooled ``out``) was positive."""
    da[:] = 0
    u = np.uint64
    for o in range(dout.shape[0]):
        if not relu or out[u(o)] > 0:
            da[u(arg[u(o)])] = dout[u(o)]


@njit(cache=True)
def _pooled_bias_grad(dout, out, relu, gb):
    """The gradient of the bias a conv left to its pool: the sum of the pooled gradients ``dout``
    (rows of ``gb``'s size; with ``relu`` only where the pooled ``out`` is positive), 4x fewer
    terms than the conv's own output gradient, which is zero outside the windows' maxima."""
    c = gb.shape[0]
    acc = np.zeros(c, np.float32)
    u = np.uint64
    for r in range(dout.shape[0] // c):
        base = u(r * c)
        for k in range(c):
            g = dout[base + u(k)]
            acc[k] += np.float32(0) if relu and out[base + u(k)] <= 0 else g
    gb[:] = acc


@njit(cache=True)
def _dropout_back(da, drop, r0, n, moff, keep):
    d = da.shape[0] // n if n else 0
    u = np.uint64
    for i in range(n):
        base = u(i * d)
        pos = drop[1] + r0 + i
        for j in range(d):
            if _kept(drop, pos, moff + j, keep):
                da[base + u(j)] = da[base + u(j)] / keep
            else:
                da[base + u(j)] = 0


@njit(cache=True)
def backward_chunk(r0, n, params, layout, keep, drop, s, si, grad):
    """Backward pass of a chunk whose forward pass left its values in ``s``/``si`` and whose
    output gradient is at the last layer's ``DOUT``: writes the parameter gradients to ``grad``."""
    for j in range(layout.shape[0] - 1, -1, -1):
        ly = layout[j]
        h, w, ci, ho, wo, co = ly[H], ly[W], ly[CI], ly[HO], ly[WO], ly[CO]
        dout = s[ly[DOUT] : ly[DOUT] + n * ho * wo * co]
        has_din = ly[DIN] >= 0
        da = s[ly[DIN] : ly[DIN] + n * h * w * ci] if has_din else s[:0]
        if ly[KIND] == POOL:
            arg = si[ly[AUX] : ly[AUX] + n * ho * wo * co]
            out = s[ly[OUT] : ly[OUT] + n * ho * wo * co]
            _unpool(dout, arg, out, ly[RELU_DONE] == 1, da)
            if ly[BOFF] >= 0:  # the bias the conv before left to this pool: its gradient here
                _pooled_bias_grad(dout, out, ly[RELU_DONE] == 1, grad[ly[BOFF] : ly[BOFF] + co])
        else:
            if ly[ACT] == RELU and ly[RELU_DONE] == 0:
                _relu_back(dout, s[ly[OUT] : ly[OUT] + n * ho * wo * co])
            k = ly[KH] * ly[KW] * ci
            dz = dout.reshape(n * ho * wo, co)
            gw = grad[ly[WOFF] : ly[WOFF] + k * co].reshape(k, co)
            if ly[BOFF] >= 0 and ly[FUSED] == 0:  # else the pool after it did
                _col_sums(dz, grad[ly[BOFF] : ly[BOFF] + co])
            wino = ly[KIND] == CONV and ly[WINO] >= 0
            if wino:
                _wino_backward(dz, n, ly, s, gw, da, has_din)
            else:
                _mm(True, False, _inputs(s, ly, n, k), dz, gw)
            wk = params[ly[WOFF] : ly[WOFF] + k * co].reshape(k, co)
            if wino:
                pass
            elif has_din and ly[KIND] == CONV:
                dcols = s[ly[DCOLS] : ly[DCOLS] + n * ho * wo * k].reshape(n * ho * wo, k)
                _mm(False, True, dz, wk, dcols)
                _col2im(dcols, n, h, w, ci, ho, wo, ly[KH], ly[KW], ly[PT], ly[PL], da)
            elif has_din:
                _mm(False, True, dz, wk, da.reshape(n, k))
        if has_din and ly[MOFF] >= 0:
            _dropout_back(da, drop, r0, n, ly[MOFF], keep[j])


@njit(cache=True)
def _inputs(s, ly, n, k):
    """The matrix a layer multiplied its kernel with: im2col patches, or the flat inputs."""
    rows = n * ly[HO] * ly[WO]
    off = ly[AUX] if ly[KIND] == CONV else ly[IN]
    return s[off : off + rows * k].reshape(rows, k)


# --------------------------------------------------------------------------- whole steps
@njit(cache=True, parallel=True)
def gradients(x, y, idx, scale, chunk, params, layout, keep, drop, scratch, iscratch, partial,
              stats, target):
    """Forward + backward of the batch ``idx`` (``n`` rows) on ``T = scratch.shape[0]`` worker
    threads; ``partial[c]`` gets chunk ``c``'s gradient, ``stats[c]`` its (loss sum, correct);
    ``target`` as ``_loss_grad`` takes it."""
    n = idx.shape[0]
    n_chunks = (n + chunk - 1) // chunk
    workers = scratch.shape[0]
    inv_n = np.float32(1.0) / np.float32(n)
    last = layout[layout.shape[0] - 1]
    classes = last[CO]
    for wkr in prange(workers):
        s, si = scratch[wkr], iscratch[wkr]
        for c in range(wkr, n_chunks, workers):
            r0 = c * chunk
            m = min(chunk, n - r0)
            forward_chunk(x, idx, r0, m, scale, params, layout, keep, drop, s, si, c == wkr)
            p = s[last[OUT] : last[OUT] + m * classes].reshape(m, classes)
            dz = s[last[DOUT] : last[DOUT] + m * classes].reshape(m, classes)
            loss, correct = _loss_grad(p, y, idx, r0, inv_n, target, dz)
            stats[c, 0] = loss
            stats[c, 1] = correct
            backward_chunk(r0, m, params, layout, keep, drop, s, si, partial[c])


@njit(cache=True, parallel=True)
def reduce_adam(partial, n_chunks, params, m, v, lr_t, beta_1, beta_2, epsilon):
    """Sum the chunk gradients in chunk order, then one Keras Adam step (``lr_t`` is
    ``lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)``, all float32). Parameters are independent:
    split over the worker threads (the same bits on any number)."""
    one = np.float32(1)
    for i in prange(params.shape[0]):
        g = partial[0, i]
        for c in range(1, n_chunks):
            g += partial[c, i]
        m[i] += (g - m[i]) * (one - beta_1)
        v[i] += (g * g - v[i]) * (one - beta_2)
        params[i] -= (m[i] * lr_t) / (np.sqrt(v[i]) + epsilon)


@njit(cache=True, parallel=True)
def reduce_sgd(partial, n_chunks, params, m, lr, momentum, nesterov):
    """Sum the chunk gradients in chunk order, then one Keras SGD step (momentum if ``m`` is
    not empty), split over the worker threads like ``reduce_adam``."""
    for i in prange(params.shape[0]):
        g = partial[0, i]
        for c in range(1, n_chunks):
            g += partial[c, i]
        if m.shape[0] == 0:
            params[i] -= g * lr
        else:
            m[i] = m[i] * momentum - g * lr
            if nesterov:
                params[i] += m[i] * momentum - g * lr
            else:
                params[i] += m[i]


@njit(cache=True, parallel=True)
def predict(x, scale, chunk, params, layout, keep, scratch, iscratch, out):
    """Probabilities ``out`` ``(N, classes)`` of all rows of ``x`` (no dropout)."""
    n = x.shape[0]
    n_chunks = (n + chunk - 1) // chunk
    workers = scratch.shape[0]
    last = layout[layout.shape[0] - 1]
    classes = last[CO]
    idx = np.arange(n)
    no_drop = np.zeros(0, np.int64)
    for wkr in prange(workers):
        s, si = scratch[wkr], iscratch[wkr]
        for c in range(wkr, n_chunks, workers):
            r0 = c * chunk
            m = min(chunk, n - r0)
            forward_chunk(x, idx, r0, m, scale, params, layout, keep, no_drop, s, si, c == wkr)
            out[r0 : r0 + m] = s[last[OUT] : last[OUT] + m * classes].reshape(m, classes)


# What ``engine.warm.compile_conv`` builds, part by part: a training run compiles only the parts it
# calls before its first epoch (its images' type, its optimizer), the rest in the background.
PARTS = ("gradients-uint8", "predict-uint8", "gradients-float32", "predict-float32",
         "reduce_adam", "reduce_sgd")


def compiled_before(*parts: str) -> bool:
    """Are these parts of the kernels (``PARTS``; default: all of them) in numba's cache, compiled
    from this file's current text?

    ``engine.warm`` marks each part once it has built it, and the cache complete once it has built
    them all, under the sha256 of this file's text, as numba keys its cache (a fresh checkout of
    the same code reuses it)."""
    folder = _cache_folder()
    if not folder.is_dir():
        return False
    complete = _marker(folder).is_file()
    return all((complete or _marker(folder, part).is_file())
               and any(folder.glob(f"conv_kernels.{part.split('-')[0]}-*.nbi"))
               for part in parts or PARTS)


def mark_compiled(*parts: str) -> None:
    """Record that these parts (default: all, the cache complete) of this file's text are in the
    cache."""
    folder = _cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    for part in parts or ("complete",):
        _marker(folder, part).touch()


def _cache_folder() -> Path:
    try:
        return Path(gradients._cache._cache_path)  # numba's own place for this source file
    except AttributeError:  # another numba: its cache root
        return Path(numba.config.CACHE_DIR or cache_dir())


def _marker(folder: Path, part: str = "complete") -> Path:
    import hashlib

    return folder / f"{part}-conv-{hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]}"


def worker_threads(most: int) -> int:
    """Worker threads for ``gradients``/``predict``: up to ``most``, 1 without a fast (OpenMP or
    TBB) threading layer."""
    most = min(most, numba.config.NUMBA_NUM_THREADS)
    if most < 2:
        return 1
    try:
        _probe(np.zeros(2))
        layer = numba.threading_layer()
    except (ValueError, ImportError, OSError):
        return 1
    if layer not in ("omp", "tbb"):
        return 1
    numba.set_num_threads(most)
    return most


@njit(cache=True, parallel=True)
def _probe(a):
    for i in prange(a.shape[0]):
        a[i] += 1


def blas_single():
    """Context manager: numpy's OpenBLAS on one thread (the workers are the parallelism)."""
    return _THREADS.single()
