"""Tiny studies on sklearn's 8x8 digits: a space of few epochs, and pruning that starts at once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SPACE = """\
[model]
hidden = { type = "layers", layers = [1, 2], choices = [8, 16, 32] }
activation = { type = "categorical", choices = ["relu", "tanh"] }

[train]
learning_rate = { type = "log", low = 1e-4, high = 0.5 }
batch_size = { type = "categorical", choices = [16, 32] }
epochs = 4

[tune]
pruner_startup_trials = 1
pruner_warmup_epochs = 0
sampler_startup_trials = 3
"""


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    return path


@pytest.fixture
def base():
    from mnistlab.config import load_config

    return load_config("tutorial", data__dataset="digits")


def cli_env() -> dict:
    """Environment for a ``python -m mnistlab`` subprocess that runs this checkout's code."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mnistlab", *args]
