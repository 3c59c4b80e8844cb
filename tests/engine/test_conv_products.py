"""The conv engine's matrix product: products a little over OpenBLAS's small-matrix limit are
cut into pieces (rows of the result, or the summed dimension added up in order)."""

import numpy as np
import pytest

pytest.importorskip("numba")

from mnistlab.engine import conv_kernels as K  # noqa: E402


@pytest.mark.parametrize(
    ("m", "k", "n"),
    # keras-io's first convolution on a chunk of 8 images: 5408 x 9 x 32, 1.56e6 multiply-adds
    [(5408, 9, 32), (9, 5408, 32), (100, 50, 40), (3000, 700, 2), (5, 3, 0), (4, 0, 3)],
    ids=["rows-cut", "sum-cut", "small", "too-big-to-cut", "empty", "nothing-summed"],
)
@pytest.mark.parametrize(("ta", "tb"), [(False, False), (True, False), (False, True), (True, True)])
def test_products_match_numpy(m, k, n, ta, tb):
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((k, m) if ta else (m, k), np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), np.float32)
    c = np.full((m, n), np.nan, np.float32)
    K._mm(ta, tb, a, b, c)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4 * np.sqrt(max(k, 1)))

