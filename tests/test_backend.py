"""Keras start-up: the imports mnistlab keeps out, and JAX's compilation cache."""

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import mnistlab.backend as b
keras = b.import_keras()
import jax
from mnistlab.config import ModelConfig
from mnistlab.model import build_model
build_model(ModelConfig(), (28, 28), 10, seed=1)
print(json.dumps({"cache": jax.config.jax_compilation_cache_dir,
                  "mpl": "matplotlib" in sys.modules, "pandas_blocked": sys.modules.get("pandas", 0) is None}))
"""


def probe(env_cache):
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    if env_cache is None:
        env.pop("MNISTLAB_JAX_CACHE", None)
    else:
        env["MNISTLAB_JAX_CACHE"] = env_cache
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_compile_cache_fills_the_configured_folder_and_can_be_switched_off(tmp_path):
    folder = tmp_path / "jax"
    got = probe(str(folder))
    assert got["cache"] == str(folder)
    assert any(folder.iterdir())  # the initializers' programs were written
    assert not got["mpl"] and not got["pandas_blocked"]  # kept out of keras, then unblocked
    assert probe("off")["cache"] is None


def test_an_unwritable_cache_folder_means_no_cache_not_an_error(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"  # root writes anywhere: a file where the folder should be
        blocker.write_text("x")
        target = blocker / "jax"
    else:
        tmp_path.chmod(0o500)
        target = tmp_path / "jax"
    assert probe(str(target))["cache"] is None


@pytest.mark.parametrize("name", ["matplotlib", "pandas"])
def test_figures_still_import_after_keras(name):
    code = f"import mnistlab.backend as b; b.import_keras(); import {name}; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
