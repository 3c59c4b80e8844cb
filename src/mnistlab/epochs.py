"""One epoch of training, as ``mnistlab train`` and ``mnistlab tune`` both run it.

``fit_epoch`` is used for everything mnistlab's engines (``mnistlab.engine``) do not train: models
with batch normalisation or mixed precision, MLPs with a schedule, label smoothing or
augmentation, several devices. ``conv_epoch`` trains the convnets the conv engine takes
(``trains_conv``). Every epoch trains on the seeded permutation
``engine.permutation(seed, epoch, n)`` and, when augmentation is on, on images transformed by
``mnistlab.augment`` from ``(seed, epoch)``, so resuming after any epoch gives the same bits as an
uninterrupted run.
"""

from __future__ import annotations

import numpy as np

from mnistlab.config import Config
from mnistlab.engine import permutation
from mnistlab.model import to_input


def trains_fast(config: Config) -> bool:
    """Whether the fast engine trains this config: a float32 MLP on the fast loop, with no
    augmentation or label smoothing (Keras fit trains everything else)."""
    return (config.train.loop == "fast" and config.model.kind == "mlp"
            and not config.augment.enabled and not config.train.label_smoothing
            and config.train.precision == "float32")


def trains_conv(config: Config) -> bool:
    """Whether mnistlab's conv engine (``engine.conv_loop``) trains this config: a float32 ReLU
    convnet without batch normalisation, SGD or Adam (constant or cosine learning rate), on one
    device (augmentation and label smoothing are fine)."""
    m, t = config.model, config.train
    return (t.loop == "fast" and m.kind == "cnn" and m.activation == "relu"
            and not any(b.batch_norm for b in m.conv) and t.optimizer in ("sgd", "adam")
            and t.precision == "float32" and t.devices == "1")


def keras_kind(config: Config) -> str:
    """What ``backend.choose`` should pick a backend for: ``"cnn"`` for a convnet Keras ``fit``
    trains (TensorFlow, when installed, is 3.6x faster there than JAX), else ``"mlp"`` (JAX:
    Keras then only builds, evaluates and saves the model)."""
    return "cnn" if config.model.kind == "cnn" and not trains_conv(config) else "mlp"


def conv_epoch(model, x, y, xv, yv, cfg: Config, epoch: int, progress=None) -> tuple[dict, dict]:
    """Train epoch ``epoch`` on the conv engine; return its logs and the engine record.

    The same order (and augmented images) as ``fit_epoch``; labels are ints; ``x`` uint8 (or
    float32), ``xv`` either. The engine reads the model and optimizer variables at the start and
    writes them back at the end, so a checkpoint after any epoch resumes bit-identically."""
    from mnistlab.engine.conv_loop import fit_conv

    order = permutation(cfg.seed, epoch, len(x)) if cfg.train.shuffle else np.arange(len(x))
    xe = _epoch_images(x[order], cfg, epoch) if cfg.augment.enabled else x[order]
    steps = _step_callback(progress, epoch, cfg.train.epochs)
    hist = fit_conv(model, xe, y[order], xv, yv, epochs=epoch + 1, initial_epoch=epoch,
                    batch_size=cfg.train.batch_size, seed=cfg.seed, shuffle=False,
                    callbacks=[steps] if steps else ())
    return {k: float(v[-1]) for k, v in hist.items()}, hist.engine


def fit_epoch(model, x, y_onehot, xv, yv_onehot, cfg: Config, epoch: int, parallel=None,
              progress=None) -> dict:
    """Train epoch ``epoch`` with ``model.fit`` and return its logs (loss, accuracy, val_*).

    ``x`` is uint8 pixels (scaled here, one epoch at a time: no float32 copy of the whole set
    is kept) or float32 in [0, 1]; ``xv`` is float32. In a multi-process job every process
    permutes (and augments) the whole set the same way, then feeds only its own slice of each
    global batch
    (``DataParallelTraining.local``). ``progress.step``, if there is one, hears every step.
    """
    order = permutation(cfg.seed, epoch, len(x)) if cfg.train.shuffle else np.arange(len(x))
    x, y_onehot = _epoch_images(x[order], cfg, epoch), y_onehot[order]
    batch_size = cfg.train.batch_size
    if parallel is not None:
        (x, y_onehot), (xv, yv_onehot) = parallel.local(x, y_onehot), parallel.local(xv, yv_onehot)
        batch_size = parallel.batch_size
    steps = _step_callback(progress, epoch, cfg.train.epochs)
    hist = model.fit(
        x, y_onehot, batch_size=batch_size, epochs=epoch + 1, initial_epoch=epoch,
        validation_data=(xv, yv_onehot), shuffle=False, verbose=0,
        callbacks=[steps] if steps else None,
    )
    return {k: float(v[-1]) for k, v in hist.history.items()}


def _epoch_images(x, cfg: Config, epoch: int):
    """Float32 images of the epoch (in its order): augmented (seeded by the epoch) or scaled.

    Made once per epoch from the uint8 set. (Batches made on demand through a Keras
    ``PyDataset`` saved no peak memory and stalled: three epochs of thirteen took 82 s instead
    of 41-46 s, measured with the best preset on TensorFlow.)"""
    if cfg.augment.enabled:
        from mnistlab.augment import augment_epoch

        return augment_epoch(x, cfg.augment, cfg.seed, epoch)
    return to_input(x) if x.dtype == np.uint8 else x


def _step_callback(progress, epoch: int, epochs: int):
    """A Keras callback that passes each step's running loss and accuracy to ``progress.step``
    (the terminal's bar inside a long epoch); None when ``progress`` has no ``step``."""
    step = getattr(progress, "step", None)
    if step is None:
        return None
    import keras

    class Steps(keras.callbacks.Callback):
        def on_epoch_begin(self, _epoch, logs=None):
            step(epoch + 1, epochs, 0, self.params.get("steps") or 0, None)

        def on_train_batch_end(self, batch, logs=None):
            step(epoch + 1, epochs, batch + 1, self.params.get("steps") or 0, logs or {})

    return Steps()
