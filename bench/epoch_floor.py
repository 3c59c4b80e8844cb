"""The tutorial's epoch against its matrix products alone (issue 18's "1.1x the GEMM floor").

Issue 18 put the epoch target at 0.11 s when the products of one epoch allowed about 0.10 s on
two threads: about 1.1x the floor. This machine's speed moves by half within the hour, so this
bench measures the ratio in one process, alternating: the compiled loop's epoch
(``JitLoop``, two threads, 329 steps of 128 on full Fashion-MNIST's 42,000 training images) and
the validation pass (18,000 images, ``JitLoop.predict``), against a compiled loop that makes the
very same ``cblas_sgemm`` calls on the same two threads with the same buffers and nothing else:
no gathering and scaling of the batch, no bias, activation, softmax, loss or update arithmetic
(the "floor"). The validation floor is the forward pass' products, half the rows on each thread.

Run:  .venv/bin/python bench/epoch_floor.py [--rounds 7]
Prints the median of each and their ratio. The floor kernel compiles on first use (~5 s).
"""

import argparse
import statistics
import time
from types import SimpleNamespace

import numpy as np

from mnistlab.data import load_dataset
from mnistlab.data.split import split_train_val
from mnistlab.engine import kernels


def floor_kernels():
    """Two numba kernels making ``epoch_two``'s and ``forward_rows``' products only."""
    kernels.load()
    import numba

    mm, kernel, hidden = kernels._mm, kernels._kernel, kernels._hidden

    @numba.njit(parallel=True, nogil=True)
    def epoch_products(n, bs, cut, net, buf):
        w_flat, g_flat, m_flat, layout, acts, hoff = net
        xb, hbuf, gbuf, z, tmp = buf
        last, rows = layout.shape[0] - 1, xb.shape[0]
        for start in range(0, n, bs):
            k = min(bs, n - start)
            h = (k + 1) // 2
            for phase in range(2):
                for t in numba.prange(2):
                    if phase == 0:  # _half: forward and back through the layers
                        r0, r1 = t * h, t * h + min(h, k - t * h)
                        a = xb[r0:r1]
                        for j in range(last):
                            hj = hidden(hbuf, hoff, layout, j, rows)[r0:r1]
                            mm(False, False, 1.0, a, kernel(w_flat, layout, j), 0.0, hj)
                            a = hj
                        mm(False, False, 1.0, a, kernel(w_flat, layout, last), 0.0, z[r0:r1])
                        g = z[r0:r1]
                        for j in range(last, 0, -1):
                            gp = hidden(gbuf, hoff, layout, j - 1, rows)[r0:r1]
                            mm(False, True, 1.0, g, kernel(w_flat, layout, j), 0.0, gp)
                            g = gp
                    else:  # _update, plain SGD: w -= a.T @ d
                        lo, hi = (0, cut) if t == 0 else (cut, layout[0, 1])
                        for j in range(last + 1 if t == 1 else 1):
                            if j == 0:
                                a, w0, w1 = xb[:k, lo:hi], lo, hi
                            else:
                                a, w0, w1 = hidden(hbuf, hoff, layout, j - 1, rows)[:k], 0, \
                                    layout[j, 1]
                            d = z[:k] if j == last else hidden(gbuf, hoff, layout, j, rows)[:k]
                            mm(True, False, -1.0, a, d, 1.0, kernel(w_flat, layout, j)[w0:w1])

    @numba.njit(parallel=True, nogil=True)
    def forward_products(x, w_flat, layout, chunk, out):
        n, last = x.shape[0], layout.shape[0] - 1
        half = (n + 1) // 2
        for t in numba.prange(2):
            widths = 0
            for j in range(last):
                widths += layout[j, 2]
            hid = np.empty(chunk * widths, np.float32)
            for s in range(t * half, min(n, (t + 1) * half), chunk):
                e = min(n, s + chunk, (t + 1) * half)
                a, off = x[s:e], 0
                for j in range(last):
                    hj = hid[off : off + (e - s) * layout[j, 2]].reshape(e - s, layout[j, 2])
                    off += (e - s) * layout[j, 2]
                    mm(False, False, 1.0, a, kernel(w_flat, layout, j), 0.0, hj)
                    a = hj
                mm(False, False, 1.0, a, kernel(w_flat, layout, last), 0.0, out[s:e])

    return epoch_products, forward_products


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    from mnistlab.engine.blas import Threads
    from mnistlab.engine.forward import CHUNK
    from mnistlab.engine.jit_loop import JitLoop

    ds = load_dataset("fashion_mnist")
    tr, va = split_train_val(ds.y_train, 0.3, 111)
    x, y = ds.x_train[tr].reshape(len(tr), -1), ds.y_train[tr]
    xv = ds.x_train[va].reshape(len(va), -1).astype(np.float32) / np.float32(255)
    rng = np.random.default_rng(0)
    dims = [784, 100, 64, 32, 10]
    plan = [SimpleNamespace(kernel=(rng.standard_normal((a, b)) * 0.05).astype(np.float32),
                            activation="relu" if b != 10 else "softmax",
                            bias=np.zeros(b, np.float32), dropout=0.0)
            for a, b in zip(dims, dims[1:], strict=False)]
    sgd = SimpleNamespace(learning_rate=0.01, momentum=0.0, nesterov=False, momentums=[])
    loop = JitLoop(plan, sgd, 128, 784, len(x), forced=2)
    if loop.replica is not None or not loop.two_usable:
        raise SystemExit("needs the compiled loop on two threads (run `make test` or "
                         "`python -m mnistlab.engine.warm` first)")
    epoch_products, forward_products = floor_kernels()
    out = np.empty((len(xv), 10), np.float32)
    y_ord = y.astype(np.int64)
    kinds = {"epoch": [], "epoch floor": [], "validation": [], "validation floor": []}
    with Threads().single():
        for r in range(args.rounds + 1):  # round 0 compiles and warms up
            order = rng.permutation(len(x))
            t0 = time.perf_counter()
            loop._run(x, y_ord[order], order, None, True)
            t1 = time.perf_counter()
            epoch_products(len(x), 128, loop.cut, loop.net, loop.buf)
            t2 = time.perf_counter()
            loop.predict(xv)
            t3 = time.perf_counter()
            forward_products(xv, loop.w_flat, loop.layout, CHUNK, out)
            t4 = time.perf_counter()
            if r:
                for name, s in zip(kinds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    kinds[name].append(s)
    med = {k: statistics.median(v) for k, v in kinds.items()}
    for k, v in med.items():
        print(f"{k:18s} median {v * 1e3:7.1f} ms  (min {min(kinds[k]) * 1e3:.1f})")
    whole, floor = med["epoch"] + med["validation"], med["epoch floor"] + med["validation floor"]
    print(f"training + validation {whole * 1e3:.1f} ms against the products alone "
          f"{floor * 1e3:.1f} ms: {whole / floor:.2f}x the floor (issue 18: ~1.1x)")


if __name__ == "__main__":
    main()
