"""Presets give what their names promise, measured on real data that ships with a package."""

from mnistlab.config import load_config
from mnistlab.training import train


def test_quick_preset_gives_a_usable_model_on_mnist_sample(tmp_path):
    run = train(load_config("quick", data__dataset="mnist_sample"), out=tmp_path, report=False)
    assert run.metrics["test_accuracy"] >= 0.85
    assert run.config.train.epochs == 5
