"""One training step of the conv engine, piece by piece: where a chunk's time goes.

The keras-io convnet (``bench/cnn_engines.build_model``), a chunk of 8 Fashion-MNIST images, one
thread, the engine's own kernels called one at a time on the scratch a real step left behind.
Prints the median of ``--repeats`` timings per piece in microseconds, plus the first layer's
product as one ``cblas_sgemm`` (what ``_mm`` did before it cut products just over OpenBLAS's
small-matrix limit in pieces) beside ``_mm``'s.

Run:  PYTHONPATH=src .venv/bin/python bench/conv_step.py [--repeats 300]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from mnistlab.engine import conv_kernels as K  # noqa: E402
from mnistlab.engine import conv_loop  # noqa: E402
from mnistlab.engine.conv_plan import read_plan  # noqa: E402


@njit
def _one_sgemm(a, b, c):
    """``c = a @ b`` as a single product, never cut."""
    m, n = c.shape
    K._sgemm(101, 111, 111, m, n, a.shape[1], np.float32(1.0), a.ctypes.data, a.shape[1],
             b.ctypes.data, n, np.float32(0.0), c.ctypes.data, n)


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    import cnn_engines

    ds = cnn_engines.load()
    model = cnn_engines.build_model()
    plan = read_plan(model)
    x, scale, y, _, _ = conv_loop._validate(ds.x_train[:512], ds.y_train[:512], None, None, plan)
    n = 8
    layout, s, si = conv_loop._scratch(plan, n, 1)
    s, si = s[0], si[0]
    idx, grad = np.arange(n), np.zeros(len(plan.params), np.float32)
    drop = np.array([5, 0, plan.mask_units], np.int64)
    target = conv_loop.loss_targets(model, plan.classes)
    last = layout[-1]
    p = s[last[K.OUT] : last[K.OUT] + n * 10].reshape(n, 10)
    dp = s[last[K.DOUT] : last[K.DOUT] + n * 10].reshape(n, 10)

    def forward():
        K.forward_chunk(x, idx, 0, n, scale, plan.params, layout, plan.keep, drop, s, si, True)

    def step():
        forward()
        K._loss_grad(p, y, idx, 0, np.float32(1 / 128), target, dp)
        K.backward_chunk(0, n, plan.params, layout, plan.keep, drop, s, si, grad)

    conv1, pool1, conv2 = layout[0], layout[1], layout[2]
    h, w, ho, wo = conv1[K.H], conv1[K.W], conv1[K.HO], conv1[K.WO]
    a0 = s[conv1[K.IN] : conv1[K.IN] + n * h * w]
    rows, k, co = n * conv1[K.HO] * conv1[K.WO], 9 * conv1[K.CI], conv1[K.CO]
    cols = s[conv1[K.AUX] : conv1[K.AUX] + rows * k].reshape(rows, k)
    z = s[conv1[K.OUT] : conv1[K.OUT] + rows * co].reshape(rows, co)
    dz = s[conv1[K.DOUT] : conv1[K.DOUT] + rows * co].reshape(rows, co)
    wk = plan.params[conv1[K.WOFF] : conv1[K.WOFF] + k * co].reshape(k, co)
    gw = grad[conv1[K.WOFF] : conv1[K.WOFF] + k * co].reshape(k, co)
    size = n * pool1[K.HO] * pool1[K.WO] * pool1[K.CO]
    out, arg = s[pool1[K.OUT] : pool1[K.OUT] + size], si[pool1[K.AUX] : pool1[K.AUX] + size]
    a1 = s[pool1[K.IN] : pool1[K.IN] + rows * co]
    b1 = plan.params[pool1[K.BOFF] : pool1[K.BOFF] + co]
    a2 = s[conv2[K.IN] : conv2[K.IN] + size]
    z2 = s[conv2[K.OUT] : conv2[K.OUT] + n * conv2[K.HO] * conv2[K.WO] * conv2[K.CO]]
    z2 = z2.reshape(-1, conv2[K.CO])
    dz2 = s[conv2[K.DOUT] : conv2[K.DOUT] + z2.size].reshape(z2.shape)
    k2 = 9 * conv2[K.CI]
    gw2 = grad[conv2[K.WOFF] : conv2[K.WOFF] + k2 * conv2[K.CO]].reshape(k2, conv2[K.CO])
    da2 = s[conv2[K.DIN] : conv2[K.DIN] + size]
    pieces = {
        "whole step (forward, loss, backward)": step,
        "forward": forward,
        "conv1 im2col": lambda: K._im2col(a0, n, h, w, 1, ho, wo, 3, 3, 0, 0, cols),
        f"conv1 product {rows}x{k}x{co}, _mm": lambda: K._mm(False, False, cols, wk, z),
        f"conv1 product {rows}x{k}x{co}, one sgemm": lambda: _one_sgemm(cols, wk, z),
        "conv1 kernel gradient, _mm": lambda: K._mm(True, False, cols, dz, gw),
        "pool1 (2x2, bias, relu)": lambda: K._pool(a1, n, ho, wo, co, ho // 2, wo // 2, 2, 2, b1,
                                                   K.RELU, out, arg),
        "pool1 backward (unpool)": lambda: K._unpool(out, arg, out, True, dz.ravel()),
        "conv2 Winograd forward (kernel transformed)": lambda: K._wino_forward(
            a2, n, conv2, plan.params, s, z2, True),
        "conv2 Winograd forward (kernel kept)": lambda: K._wino_forward(
            a2, n, conv2, plan.params, s, z2, False),
        "conv2 Winograd backward": lambda: K._wino_backward(dz2, n, conv2, s, gw2, da2, True),
    }
    with K.blas_single():
        step()
        for name, fn in pieces.items():
            print(f"{name:46s} {timed(fn, args.repeats):8.1f} us")


if __name__ == "__main__":
    main()
