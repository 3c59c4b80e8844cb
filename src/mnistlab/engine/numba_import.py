"""Import numba without scipy.linalg: a third of the compiled engine's load at start-up.

The first kernel a process calls (compiled or from the cache) makes numba load its numpy support,
``numba.np.arraymath``, whose import checks for a BLAS by importing ``scipy.linalg.cython_blas``,
which imports all of ``scipy.linalg``: 0.3-0.4 s of a tutorial run's 1-2 s start on this project's
2-vCPU machines (``bench/startup.py``). mnistlab's kernels never use numba's BLAS (they call
numpy's OpenBLAS themselves), so ``numba()`` imports that module while the check finds nothing,
then sets its answer to what the check would have said with scipy installed. Numba code that
needs its BLAS (``np.dot``) imports scipy itself when it is compiled, as before.
"""

from __future__ import annotations

import importlib.util
import sys

_BLAS = "scipy.linalg.cython_blas"


def numba():
    """The ``numba`` module, its numpy support imported without ``scipy.linalg``."""
    import numba as nb

    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return nb
    sys.modules[_BLAS] = None  # "import scipy.linalg.cython_blas" fails at once, parents unread
    try:
        import numba.np.arraymath as arraymath
    finally:
        del sys.modules[_BLAS]
    arraymath._HAVE_BLAS = importlib.util.find_spec("scipy") is not None
    return nb
