"""Keras start-up: the imports mnistlab keeps out, and JAX's compilation cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

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


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow  # about 18 s: warm-up, a run and warm-up again into an empty JAX cache
@pytest.mark.skipif(not FASHION.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_warm_keras_leaves_nothing_for_a_first_run_to_compile(tmp_path):
    """``python -m mnistlab.engine.warm keras`` (make run's set-up) caches every XLA program a
    first tutorial run on 28x28 images compiles (a real ``mnistlab train`` process, on another
    seed), and the second call does nothing."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "MNISTLAB_JAX_CACHE": str(tmp_path / "jax"),
           "MNISTLAB_KERAS_FILES": str(tmp_path / "templates")}
    warm = [sys.executable, "-m", "mnistlab.engine.warm", "keras"]
    subprocess.run(warm, env=env, check=True, capture_output=True)
    marks = list((tmp_path / "jax").glob("warmed-keras*"))
    assert len(marks) == 1
    assert len(list((tmp_path / "templates").iterdir())) == 1  # the tutorial model's files
    entries = {p.name for p in (tmp_path / "jax").iterdir()}
    run = subprocess.run(
        [sys.executable, "-m", "mnistlab", "train", "--dataset", "fashion_mnist", "--epochs", "1",
         "--seed", "7", "--no-report", "--quiet", "--out", str(tmp_path / "runs")],
        env={**env, "JAX_LOG_COMPILES": "1"}, capture_output=True, text=True, check=True)
    compiled = [line for line in run.stderr.splitlines() if "Compiling " in line]
    hits = [line for line in run.stderr.splitlines() if "cache hit" in line]
    assert compiled and len(hits) == len(compiled), "\n".join(compiled)
    assert {p.name for p in (tmp_path / "jax").iterdir()} == entries  # nothing new written
    # the tutorial's own seed: its Keras files come from the template warm-up kept, no Keras
    subprocess.run(
        [sys.executable, "-m", "mnistlab", "train", "--dataset", "fashion_mnist", "--epochs", "1",
         "--no-report", "--quiet", "--out", str(tmp_path / "tutorial")],
        env=env, capture_output=True, text=True, check=True)
    (made,) = (tmp_path / "tutorial").iterdir()
    assert json.loads((made / "manifest.json").read_text())["model_files"] == "template"
    before = marks[0].stat().st_mtime_ns
    subprocess.run(warm, env=env, check=True, capture_output=True)  # already done: returns
    assert {p.name for p in (tmp_path / "jax").iterdir()} == entries
    assert marks[0].stat().st_mtime_ns == before
