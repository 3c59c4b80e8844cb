"""Train one configuration on the seeded train/validation split, in memory, for a tuning trial.

A trial needs what ``mnistlab.training.train`` does up to the end of the last epoch, and nothing
after: no run directory, no checkpoints, no test set. The same pieces give the same numbers: the
split of ``mnistlab.data.split``, the model of ``mnistlab.model`` and the loops of
``mnistlab.engine`` (or Keras ``fit`` for ``train.loop = "fit"``), with the same seeds, so the
best trial retrained by ``train`` reproduces its validation accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mnistlab.config import Config
from mnistlab.data import Dataset
from mnistlab.errors import TrainingError

# Called after every epoch with (epoch index from 0, logs); returns True to stop training.
EpochHook = Callable[[int, dict], bool]


@dataclass(frozen=True)
class Split:
    """The training and validation part of a dataset, as the tutorial splits it.

    Attributes:
        x: uint8 ``(N, H, W)`` training images; y: int64 ``(N,)`` labels.
        xv: uint8 ``(M, H, W)`` validation images; yv: int64 ``(M,)`` labels.
        image_shape: ``(H, W)``; num_classes: number of labels.
    """

    x: np.ndarray
    y: np.ndarray
    xv: np.ndarray
    yv: np.ndarray
    image_shape: tuple[int, int]
    num_classes: int


def split_for(config: Config, ds: Dataset) -> Split:
    """Hold out ``config.data.val_fraction`` of ``ds``'s training set, seeded by ``config.seed``.

    The test set is not part of the result: tuning never looks at it.
    """
    from mnistlab.data.split import split_train_val

    train_idx, val_idx = split_train_val(ds.y_train, config.data.val_fraction, config.seed,
                                         config.data.stratify)
    return Split(ds.x_train[train_idx], ds.y_train[train_idx], ds.x_train[val_idx],
                 ds.y_train[val_idx], ds.image_shape, ds.num_classes)


class _Patience:
    """``train.early_stopping`` as ``mnistlab train`` applies it (0 = off)."""

    def __init__(self, monitor: str, patience: int):
        self.monitor, self.patience, self.best, self.wait = monitor, patience, None, 0

    def done(self, logs: dict) -> bool:
        if not self.patience:
            return False
        value = logs[self.monitor]
        if self.best is None or (value < self.best if self.monitor == "val_loss" else
                                 value > self.best):
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience


def fit_config(config: Config, split: Split, on_epoch: EpochHook) -> list[dict]:
    """Build the configured model and train it on ``split``, calling ``on_epoch`` every epoch.

    Args:
        config: the trial's configuration.
        split: the data (``split_for``).
        on_epoch: ``(epoch, logs)`` with ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``;
            may raise (e.g. ``optuna.TrialPruned``) to abandon the trial.

    Returns:
        One dict of logs per trained epoch.

    Raises:
        TrainingError: the loss became NaN or infinite (diverged).
        ModelError: the configuration is not a model the loop can train.
    """
    from mnistlab.backend import choose, without_tensorflow
    from mnistlab.epochs import keras_kind

    choose(keras_kind(config))  # Keras-fit convnets on TensorFlow when installed
    with without_tensorflow():  # a schedule's get_config would import all of TensorFlow (3 s)
        return _fit(config, split, on_epoch)


def _fit(config: Config, split: Split, on_epoch: EpochHook) -> list[dict]:
    from mnistlab.model import build_model, compile_model

    model = build_model(config.model, split.image_shape, split.num_classes, seed=config.seed,
                        precision=config.train.precision)
    compile_model(model, config.train, math.ceil(len(split.x) / config.train.batch_size))
    rows: list[dict] = []
    patience = _Patience(config.train.monitor, config.train.early_stopping)

    def after_epoch(epoch: int, logs: dict) -> bool:
        logs = {k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        if not all(math.isfinite(v) for v in logs.values()):
            raise TrainingError(
                f"training diverged at epoch {epoch + 1} (loss {logs['loss']}); lower "
                f"train.learning_rate (was {config.train.learning_rate:.3g})"
            )
        rows.append(logs)
        stop = on_epoch(epoch, logs)
        return bool(stop) or patience.done(logs)

    after_epoch.on_epoch_end = after_epoch  # the hook name fit_fast calls
    from mnistlab.epochs import trains_conv, trains_fast

    if trains_fast(config):  # the MLP engine; the conv engine; everything else on Keras fit
        from mnistlab.engine import fit_fast

        fit_fast(model, split.x, split.y, split.xv, split.yv, epochs=config.train.epochs,
                 batch_size=config.train.batch_size, optimizer=model.optimizer, seed=config.seed,
                 shuffle=config.train.shuffle, callbacks=[after_epoch])
    elif trains_conv(config):
        from mnistlab.epochs import conv_epoch
        from mnistlab.model import to_input

        xv = to_input(split.xv)
        for epoch in range(config.train.epochs):
            logs, _ = conv_epoch(model, split.x, split.y, xv, split.yv, config, epoch)
            if after_epoch(epoch, logs):
                break
    else:
        _fit_keras(model, split, config, after_epoch)
    return rows


def _fit_keras(model, split: Split, config: Config, after_epoch: EpochHook) -> None:
    """Keras ``fit`` one epoch at a time, exactly as ``mnistlab train`` runs it."""
    from mnistlab.epochs import fit_epoch
    from mnistlab.model import to_input

    eye = np.eye(split.num_classes, dtype=np.float32)
    xv, y1, yv1 = to_input(split.xv), eye[split.y], eye[split.yv]  # x: scaled per epoch
    for epoch in range(config.train.epochs):
        if after_epoch(epoch, fit_epoch(model, split.x, y1, xv, yv1, config, epoch)):
            return
