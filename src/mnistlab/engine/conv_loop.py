"""Train and run small convnets (the keras-io ``mnist_convnet``) on the CPU, fast.

``fit_conv`` trains a Keras model of Conv2D / MaxPooling2D / Flatten / Dropout / Dense layers
(see ``mnistlab.engine.conv_plan`` for the exact set) with the semantics of ``Model.fit`` and
``loss="categorical_crossentropy"`` (or ``keras.losses.CategoricalCrossentropy(label_smoothing=s)``):
mean loss over the batch with Keras' 1e-7 clip on the softmax output, one optimizer step per batch, the last partial batch included, history values averaged
over samples (Keras weights batch means by batch size), inverted dropout while training,
validation once per epoch without dropout. Optimizers: ``keras.optimizers.Adam`` (Keras 3's
update with bias correction, no amsgrad) and ``keras.optimizers.SGD`` (momentum, Nesterov), with
a constant float learning rate or a ``CosineDecay`` (no warm-up), and no clipping, weight decay, EMA,
loss scaling or accumulation.

Shuffling and dropout are seeded: epoch ``e`` trains in the order
``numpy.random.default_rng([seed, e]).permutation(N)`` (as ``mnistlab.engine.permutation``) and
its dropout masks come from a counter-based hash of a key drawn from ``default_rng([seed, e, 1])``
and each sample's position in that order (drawn inside the compiled kernels, by whichever thread
trains the sample); the model and optimizer variables are
read at the start and written back after every epoch, so resuming at ``initial_epoch=k`` from the
variables saved after epoch ``k - 1`` gives bit-identical weights to an uninterrupted run. The
gradients of a batch are summed chunk by chunk in a fixed order, so the result does not depend on
the thread count either.

The arithmetic runs in numba-compiled kernels (``mnistlab.engine.conv_kernels``) on two worker
threads, a chunk of 8 images at a time: 3x3 convolutions with 8 or more input channels as
Winograd F(2x2, 3x3) (16 OpenBLAS sgemms on transformed tiles), the others as im2col plus one
sgemm. The first call on a machine compiles the parts it calls (``parts_needed``: its images'
type and its optimizer, about 60 % of the whole, ~1.5 minutes of one core; a warning on
``logging.getLogger("mnistlab.engine")`` says so), caches the machine code and leaves the rest to
a background process once it has exited; ``python -m mnistlab.engine.warm`` does it all
beforehand.

Public functions:

``fit_conv(model, x_train, y_train, x_val, y_val, *, epochs, batch_size, seed, optimizer=None,
shuffle=True, initial_epoch=0, callbacks=(), verbose=0, threads=2) -> History``

    Args:
        model: a built Keras convnet (``conv_plan.read_plan`` lists what is supported).
        x_train: uint8 pixels 0-255 ``(N, H, W)`` or ``(N, H, W, C)`` (scaled with
            ``x * float32(1/255)``, as ``mnistlab.model.to_input``), or float32 in model units.
        y_train: int labels ``(N,)`` or one-hot ``(N, classes)``.
        x_val, y_val: the same for validation (either dtype); ``None`` or empty: no ``val_*``.
        epochs: index of the last epoch, as in ``fit`` (trains ``epochs - initial_epoch``).
        batch_size: samples per optimizer step; the last partial batch is a step too.
        seed: fixes the shuffling and the dropout masks of every epoch.
        optimizer: a Keras Adam or SGD instance; default ``model.optimizer`` (from ``compile``).
        shuffle: reshuffle every epoch; False trains in the given order.
        initial_epoch: first epoch to train when resuming.
        callbacks: ``keras.callbacks.Callback`` objects (epoch, train and ``on_train_batch_end``
            hooks with the running loss and accuracy, ``model.stop_training``
            honoured) or objects with ``on_epoch_end(epoch, logs)`` returning True to stop.
        verbose: 0 silent; 1 or 2 shows Keras' progress bar.
        threads: worker threads (at most; 1 without numba's OpenMP/TBB layer).

    Returns:
        ``History``: ``{"loss", "accuracy", "val_loss", "val_accuracy"}``, one float per trained
        epoch, and ``engine`` ``{"path": "conv", "threads", "threads_used", "chunk"}``.

    Raises:
        ModelError: unsupported model, optimizer or data shapes.

``conv_forward(plan_or_model, x, threads=2) -> numpy.ndarray``

    Args:
        plan_or_model: a ``ConvPlan`` (fast to call again) or a built Keras model (read each time).
        x: uint8 ``(N, H, W[, C])`` pixels 0-255, or float32 in model units.

    Returns:
        float32 ``(N, classes)`` softmax probabilities.

    Raises:
        ModelError: the images do not have the model's input shape.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from mnistlab.engine.conv_plan import CHUNK, ConvPlan, read_plan
from mnistlab.engine.fit import History, int_labels, permutation
from mnistlab.errors import ModelError

log = logging.getLogger("mnistlab.engine")
EPSILON = np.float32(1e-7)  # keras.backend.epsilon(), the clip in categorical cross-entropy


def _pixels(x, plan: ConvPlan, what: str) -> tuple[np.ndarray, np.float32]:
    """Rows ``(N, H*W*C)`` (uint8 kept, anything else float32) and the scale to apply."""
    x = np.asarray(x)
    u8 = x.dtype == np.uint8
    x = np.ascontiguousarray(x, dtype=np.uint8 if u8 else np.float32)
    if not x.flags.writeable:  # numba compiles read-only arrays separately (half a minute)
        x = x.copy()
    per = math.prod(plan.input_shape)
    if x.ndim < 2 or math.prod(x.shape[1:]) != per:
        raise ModelError(
            f"{what} must be images of shape {plan.input_shape} (or without the channel axis "
            f"when it is 1); received {what}.shape={x.shape}"
        )
    scale = np.float32(1.0 / 255.0) if u8 else np.float32(1.0)
    return x.reshape(len(x), per), scale


def _scratch(plan: ConvPlan, chunk: int, workers: int):
    layout, floats, ints = plan.layout(chunk)
    return layout, np.empty((workers, floats), np.float32), np.empty((workers, ints), np.int32)


def conv_forward(plan_or_model, x, threads: int = 2) -> np.ndarray:
    """Softmax probabilities of a convnet, float32 ``(N, classes)``; see the module docstring."""
    from mnistlab.engine import conv_kernels as K

    plan = plan_or_model if isinstance(plan_or_model, ConvPlan) else read_plan(plan_or_model)
    rows, scale = _pixels(x, plan, "x")
    out = np.empty((len(rows), plan.classes), np.float32)
    if not len(rows):
        return out
    n = len(rows)
    if n <= CHUNK:
        # on the calling thread: waking a worker pool costs more than a few images, and on a
        # busy machine it can wait for a whole scheduler slice
        layout, s, si = _scratch(plan, n, 1)
        last = layout[-1]
        with K.blas_single():
            K.forward_chunk(rows, np.arange(n), 0, n, scale, plan.params, layout, plan.keep,
                            np.zeros(0, np.int64), s[0], si[0], True)
        out[:] = s[0, last[K.OUT] : last[K.OUT] + n * plan.classes].reshape(n, plan.classes)
        return out
    workers = K.worker_threads(min(threads, math.ceil(n / CHUNK)))
    layout, s, si = _scratch(plan, CHUNK, workers)
    with K.blas_single():
        K.predict(rows, scale, CHUNK, plan.params, layout, plan.keep, s, si, out)
    return out


def cross_entropy(p: np.ndarray, y: np.ndarray, target=None) -> float:
    """Keras' mean categorical cross-entropy of probabilities ``p`` ``(N, C)`` for labels ``y``,
    against targets ``target[0] * onehot + target[1]`` (label smoothing; default: one-hot)."""
    logs = np.log(np.clip(p / p.sum(1, keepdims=True), EPSILON, 1 - EPSILON))
    on, off = (np.float32(1), np.float32(0)) if target is None else target
    per_row = np.take_along_axis(logs, y[:, None], 1)[:, 0] * on + logs.sum(1) * off
    return float(-per_row.astype(np.float64).mean())


def loss_targets(model, classes: int) -> np.ndarray:
    """``[1 - s, s / classes]`` (float32, as Keras smooths the one-hot labels) for the model's
    compiled loss: categorical cross-entropy on probabilities, ``label_smoothing=s`` or none.

    Raises:
        ModelError: the model was compiled with another loss.
    """
    import keras

    loss = getattr(model, "loss", None)
    smoothing = 0.0
    if type(loss) is keras.losses.CategoricalCrossentropy:
        cfg = loss.get_config()
        if cfg["from_logits"] or cfg["axis"] != -1:
            raise ModelError(
                "the conv engine trains categorical cross-entropy on the softmax's probabilities; "
                f"received from_logits={cfg['from_logits']}, axis={cfg['axis']}. Use loop='fit'"
            )
        smoothing = float(cfg["label_smoothing"])
    elif loss not in (None, "categorical_crossentropy"):
        raise ModelError(
            "the conv engine trains with loss='categorical_crossentropy' (label smoothing "
            f"allowed); the model was compiled with {loss!r}. Use loop='fit'"
        )
    return np.array([1.0 - smoothing, smoothing / classes], np.float32)


class _Trainer:
    """One epoch at a time: buffers sized once."""

    def __init__(self, plan: ConvPlan, optim, batch_size: int, threads: int, target):
        from mnistlab.engine import conv_kernels as K

        self.plan, self.optim, self.bs, self.K, self.target = plan, optim, batch_size, K, target
        chunk = min(CHUNK, batch_size)
        self.chunk = chunk
        self.workers = K.worker_threads(min(threads, math.ceil(batch_size / chunk)))
        self.layout, self.s, self.si = _scratch(plan, chunk, self.workers)
        n_chunks = math.ceil(batch_size / chunk)
        self.partial = np.empty((n_chunks, len(plan.params)), np.float32)
        self.stats = np.zeros((n_chunks, 2), np.float64)
        self.keep = plan.keep

    def epoch(self, x, scale, y, order, key: int, on_batch=None) -> tuple[float, float, int]:
        """Train one epoch in ``order`` with dropout key ``key``; return (loss sum, correct
        count, steps). ``on_batch(step, logs)`` hears each step's running mean loss and
        accuracy."""
        K, loss, correct, steps = self.K, 0.0, 0.0, 0
        drop = np.array([key, 0, self.plan.mask_units], np.int64)
        for start in range(0, len(order), self.bs):
            idx = order[start : start + self.bs]
            n_chunks = math.ceil(len(idx) / self.chunk)
            drop[1] = start
            K.gradients(x, y, idx, scale, self.chunk, self.plan.params, self.layout, self.keep,
                        drop, self.s, self.si, self.partial, self.stats, self.target)
            self.optim.step(self.partial, n_chunks)
            loss += self.stats[:n_chunks, 0].sum()
            correct += self.stats[:n_chunks, 1].sum()
            steps += 1
            if on_batch is not None:
                seen = start + len(idx)
                on_batch(steps - 1, {"loss": loss / seen, "accuracy": correct / seen})
        return loss, correct, steps


def _validate(x_train, y_train, x_val, y_val, plan: ConvPlan):
    x, scale = _pixels(x_train, plan, "x_train")
    y = int_labels(y_train, plan.classes, "y_train")
    if x_val is None or not len(x_val):
        xv, yv = x[:0], y[:0]
    else:
        xv, _ = _pixels(x_val, plan, "x_val")  # scaled by conv_forward, by its own dtype
        yv = int_labels(y_val, plan.classes, "y_val")
    if len(x) != len(y) or len(xv) != len(yv) or not len(x):
        raise ModelError(
            "x and y must have the same, non-zero number of samples; received "
            f"{len(x)}/{len(y)} train and {len(xv)}/{len(yv)} validation"
        )
    return x, scale, y, xv, yv


def parts_needed(x: np.ndarray, xv: np.ndarray, adam: bool) -> tuple[str, ...]:
    """The parts of the compiled kernels (``conv_kernels.PARTS``) training on rows ``x`` with
    validation rows ``xv`` (may be empty) calls."""
    parts = [f"gradients-{x.dtype}", "reduce_adam" if adam else "reduce_sgd"]
    if len(xv):
        parts.insert(1, f"predict-{xv.dtype}")
    return tuple(parts)


def _compiled(K, parts: tuple[str, ...]) -> None:
    """Make sure the kernels this run calls are compiled (they are cached per machine), saying so
    if not; the rest is compiled in the background once this process has exited."""
    if K.compiled_before(*parts):
        return
    from mnistlab.engine import warm

    # a warning, so that it shows without any logging set up: the user waits for it
    log.warning("mnistlab: compiling the convnet training code for this machine (once, "
                "about 2 minutes; kept in %s)", K.numba.config.CACHE_DIR)
    warm.compile_conv_once(parts)
    try:
        warm.start(training=True)
    except OSError as e:  # no cache folder: a later run compiles what it needs
        log.info("mnistlab: cannot compile the other kernels in the background (%s)", e)


def fit_conv(
    model,
    x_train,
    y_train,
    x_val,
    y_val,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    optimizer=None,
    shuffle: bool = True,
    initial_epoch: int = 0,
    callbacks=(),
    verbose: int = 0,
    threads: int = 2,
) -> History:
    """Train a convnet like ``model.fit``, fast; see the module docstring for Args/Returns."""
    import keras

    from mnistlab.engine import conv_kernels as K
    from mnistlab.engine.conv_optim import Optim

    plan = read_plan(model)
    x, scale, y, xv, yv = _validate(x_train, y_train, x_val, y_val, plan)
    if batch_size < 1 or epochs < initial_epoch or initial_epoch < 0:
        raise ModelError(
            f"need batch_size >= 1 and 0 <= initial_epoch <= epochs; received "
            f"batch_size={batch_size}, initial_epoch={initial_epoch}, epochs={epochs}"
        )
    optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if optimizer is None:
        raise ModelError("pass optimizer=... or compile the model with one first")
    optim = Optim(optimizer, plan)
    _compiled(K, parts_needed(x, xv, optim.adam))
    target = loss_targets(model, plan.classes)
    trainer = _Trainer(plan, optim, batch_size, threads, target)
    keras_cbs = [c for c in callbacks if isinstance(c, keras.callbacks.Callback)]
    plain_cbs = [c for c in callbacks if not isinstance(c, keras.callbacks.Callback)]
    cbl = keras.callbacks.CallbackList(
        keras_cbs, add_progbar=verbose != 0, model=model, verbose=verbose, epochs=epochs,
        steps=math.ceil(len(x) / batch_size),
    )
    on_batch = cbl.on_train_batch_end if keras_cbs or verbose else None
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    if len(xv):
        history.update(val_loss=[], val_accuracy=[])
    model.stop_training = False
    logs = None
    cbl.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        cbl.on_epoch_begin(epoch)
        order = permutation(seed, epoch, len(x)) if shuffle else np.arange(len(x))
        drop_key = int(np.random.default_rng([seed, epoch, 1]).integers(2**62))
        with K.blas_single():
            loss, correct, _ = trainer.epoch(x, scale, y, order, drop_key, on_batch)
        logs = {"loss": loss / len(x), "accuracy": correct / len(x)}
        if len(xv):
            p = conv_forward(plan, xv, threads)
            logs["val_loss"] = cross_entropy(p, yv, target)
            logs["val_accuracy"] = float((p.argmax(1) == yv).mean())
        for key, value in logs.items():
            history[key].append(value)
        plan.write_variables()
        optim.write_back()
        cbl.on_epoch_end(epoch, dict(logs))
        stop = [bool(c.on_epoch_end(epoch, dict(logs))) for c in plain_cbs]
        if model.stop_training or any(stop):
            break
    cbl.on_train_end(dict(logs) if logs else None)
    history = History(history)
    history.engine = {"path": "conv", "threads": threads, "threads_used": trainer.workers,
                      "chunk": trainer.chunk}
    return history
