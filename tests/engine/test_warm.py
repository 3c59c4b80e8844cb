"""``python -m mnistlab.engine.warm``: compiles what is missing, and nothing once all is marked."""

import os
import subprocess
import sys

import pytest

from mnistlab.engine import conv_kernels, kernels

# compile_all replaced by an exit with code 3, so the test sees whether main() would compile
PROBE = (
    "import sys\nfrom mnistlab.engine import warm\n"
    "warm.compile_all = lambda: sys.exit(3)\nsys.argv = ['warm']\nwarm.main()\n"
)


def _main(env) -> int:
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          timeout=120).returncode


def test_warm_compiles_only_what_is_not_marked(tmp_path):
    if not (kernels.compiled_before() and conv_kernels.compiled_before()):
        pytest.skip("the kernels are not compiled here (make test compiles them first)")
    assert _main(dict(os.environ)) == 0  # every kernel marked: nothing to do (make run, again)
    assert _main({**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}) == 3  # an empty cache
