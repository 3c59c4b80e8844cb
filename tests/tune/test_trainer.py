"""A tuning trial trains a configuration exactly as ``mnistlab train`` does (same engine, same bits)."""

import pytest

from mnistlab.config import load_config
from mnistlab.data import load_dataset
from mnistlab.training import train
from mnistlab.tune.trainer import fit_config, split_for

CNN = ['model.conv=[{filters=4, padding="same"}]', "train.epochs=2", "train.learning_rate=0.003"]


@pytest.mark.parametrize("overrides", [CNN, [*CNN, "augment.shift=0.1"]],
                         ids=["cnn-engine", "cnn-engine-augmented"])
def test_a_convnet_trial_matches_the_run_train_makes(tmp_path, overrides):
    cfg = load_config("cnn", overrides=overrides, data__dataset="digits")
    ds = load_dataset("digits")
    seen = []
    rows = fit_config(cfg, split_for(cfg, ds), lambda epoch, logs: seen.append(epoch))
    run = train(cfg, dataset=ds, out=tmp_path, report=False)
    assert run.manifest["engine"]["path"] == "conv"
    assert seen == [0, 1] and len(rows) == 2
    for mine, theirs in zip(rows, run.history, strict=True):
        assert mine["loss"] == theirs["loss"] and mine["val_loss"] == theirs["val_loss"]
