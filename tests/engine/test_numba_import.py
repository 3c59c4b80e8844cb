"""numba set up without scipy.linalg: the engine's first kernel call does not import it, and numba
code that needs numba's own BLAS still compiles and runs in that process."""

import json
import subprocess
import sys

CHILD = r"""
import json, sys
import numpy as np
from mnistlab.engine import kernels

kernels.load()
kernels.parallel_threads()  # the first kernel call: numba loads its numpy support here
after_kernel = "scipy.linalg" in sys.modules

import numba
import numba.np.arraymath as arraymath

have_blas = arraymath._HAVE_BLAS


@numba.njit
def dot(a, b):
    return np.dot(a, b)  # numba's BLAS: imports scipy's when compiled


a = np.arange(6, dtype=np.float64).reshape(2, 3)
print(json.dumps({"after_kernel": after_kernel, "have_blas": have_blas,
                  "dot": dot(a, a.T).tolist(), "after_dot": "scipy.linalg" in sys.modules}))
"""


def test_the_first_kernel_call_leaves_scipy_linalg_unimported():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["after_kernel"] is False
    assert got["have_blas"] is True  # what numba's own check says with scipy installed
    assert got["dot"] == [[5.0, 14.0], [14.0, 50.0]]
    assert got["after_dot"] is True
