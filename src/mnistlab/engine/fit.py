"""A training loop for the tutorial's MLP that runs close to what the hardware allows.

``keras.Model.fit`` pays a fixed cost per step (dispatch, XLA's per-op overhead for small matrices)
that dwarfs the arithmetic of a 784-100-64-32-10 network. ``fit_fast`` trains the same model with
the same semantics on one of three paths:

* **compiled** (``engine.jit_loop``) — a whole epoch of SGD per call into numba-compiled code,
  the matrix products on numpy's OpenBLAS, two threads splitting each step by data (bit-identical
  to one). Used for ``keras.optimizers.SGD`` (with or without momentum / Nesterov) when no
  gradient clipping, weight decay, EMA, gradient accumulation, loss scaling or learning-rate
  schedule is set, the hidden activations are relu, tanh, sigmoid or linear, and there is no
  dropout. Works on any Keras backend.
* **numpy** (``engine.numpy_loop``) — the same SGD written out with float32 numpy and OpenBLAS
  sgemm into preallocated buffers, the first layer's two big products on two BLAS threads
  (bit-identical to one). Used for SGD models with dropout, or where numba or numpy's OpenBLAS
  is missing.
* **scan** (``engine.scan_loop``) — the whole epoch as one jitted ``jax.lax.scan``: a hand-written
  forward pass, ``jax.grad`` and the optimizer's own ``stateless_apply``, so every Keras optimizer
  and every hyper-parameter works. Needs the JAX backend.

``path="auto"`` takes the first of these that can train the model and optimizer; a caller may
name one instead (``path="compiled" | "numpy" | "scan"``), and fix the thread count of the two SGD
paths (``threads=1 | 2``; by default the faster one is measured per epoch, with the same bits).
The returned history says which ran (``history.engine``).

All paths share the semantics of ``Model.fit`` with ``loss="categorical_crossentropy"`` on the
softmax output: mean loss over the batch with Keras' clipping (1e-7), the last partial batch
included, one optimizer step per batch, history values averaged over batches weighted by batch size,
inverted dropout while training. Validation runs once per epoch without dropout.

Shuffling is seeded: epoch ``e`` uses ``permutation(seed, e, n)``, and dropout masks are drawn
from ``(seed, e)`` too, so resuming at ``initial_epoch=k`` from a checkpoint of the model and
optimizer variables gives bit-identical weights to an uninterrupted run. Weight initialisation is
the model's own business (build it after ``keras.utils.set_random_seed``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mnistlab.engine.blas import Threads
from mnistlab.engine.loss import cross_entropy
from mnistlab.engine.plan import Dense, training_plan
from mnistlab.engine.sgd_loop import SgdLoop
from mnistlab.errors import ModelError, TrainingError

PATHS = ("auto", "compiled", "numpy", "scan")
SGD_ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")  # hidden layers of the SGD paths


class History(dict):
    """``{"loss", "accuracy", "val_loss", "val_accuracy"}``, one float per trained epoch, and
    ``engine``: ``{"path": "compiled" | "numpy" | "scan", "threads": the ``threads`` asked for,
    "threads_used": threads of each epoch (SGD paths; None on scan)}``."""

    engine: dict


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Return the training order of one epoch: int64 ``(n,)``, a permutation of ``range(n)``."""
    return np.random.default_rng([seed, epoch]).permutation(n)


# Optimizer settings the fast loops do not implement: any of them set sends training elsewhere.
OPTIMIZER_EXTRAS = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
                    "loss_scale_factor", "gradient_accumulation_steps")


def fit_fast(
    model,
    x_train,
    y_train,
    x_val,
    y_val,
    *,
    epochs: int,
    batch_size: int,
    optimizer,
    seed: int,
    shuffle: bool = True,
    initial_epoch: int = 0,
    callbacks=(),
    verbose: int = 0,
    path: str = "auto",
    threads: int | None = None,
) -> History:
    """Train ``model`` like ``model.fit`` with categorical cross-entropy, but much faster.

    Args:
        model: a built Keras model of Flatten + Dense (+ Dropout) layers ending in a softmax Dense.
        x_train: float32 ``(N, H, W)`` (or ``(N, D)``) in [0, 1], or uint8 pixels 0-255, which are
            scaled per batch with ``mnistlab.model.to_input`` (same values, a quarter of the
            memory, and no float32 copy of the whole set to make).
        y_train: int labels ``(N,)`` (or one-hot ``(N, C)``).
        x_val: like ``x_train``; may be empty (``M = 0``) or None, then no ``val_*`` entries.
        y_val: int labels ``(M,)`` (or one-hot).
        epochs: index of the last epoch, as in ``fit`` (trains ``epochs - initial_epoch`` epochs).
        batch_size: samples per optimizer step; the last partial batch is a step too.
        optimizer: a Keras optimizer instance; plain SGD runs on numpy or compiled code, everything
            else on JAX.
        seed: fixes the shuffling and dropout of every epoch.
        shuffle: reshuffle the training set every epoch (``permutation(seed, epoch, N)``).
        initial_epoch: epoch to start from when resuming; the model and optimizer variables must
            hold the state saved at the end of epoch ``initial_epoch - 1``.
        callbacks: ``keras.callbacks.Callback`` objects (their train/epoch hooks are called and
            ``model.stop_training`` is honoured) or any object with ``on_epoch_end(epoch, logs)``
            returning True to stop (and optionally ``on_epoch_begin(epoch)``). The model's variables hold the epoch's weights when they run.
        verbose: 0 silent; 1 or 2 shows Keras' progress bar (one line per epoch).
        path: ``"auto"`` (the fastest path that can train this), ``"compiled"``, ``"numpy"`` or
            ``"scan"`` (see the module docstring).
        threads: ``None`` (measure per epoch), 1 or 2: the threads of the compiled and numpy paths
            (never changes the result; 2 means "up to 2" on a machine with one core).

    Returns:
        A ``History``: the per-epoch figures, and which path and threads ran.

    Raises:
        ModelError: the model is not a supported MLP, or the data does not fit it.
        TrainingError: the path asked for cannot train this model or optimizer here (the scan
            path needs the JAX backend), or ``path`` / ``threads`` is not a valid choice.
    """
    _check_choice(path, threads)
    plan = training_plan(model)
    x, y, xv, yv = _data(plan, x_train, y_train, x_val, y_val)
    _check_epochs(batch_size, epochs, initial_epoch)
    optimizer.build(model.trainable_variables)
    sgd = _sgd_supported(plan, optimizer)
    loop, blas_limit, chosen = _make_loop(plan, optimizer, sgd, batch_size, x, y, len(xv), path,
                                          threads)
    xv = _floats(xv)  # validated every epoch: scaled once (4 ms an epoch on full size)
    history = _train(model, loop, blas_limit, (x, y, xv, yv), seed=seed, shuffle=shuffle,
                     epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                     verbose=verbose, steps=math.ceil(len(x) / batch_size))
    history.engine = _engine_record(loop, chosen, threads)
    return history


@dataclass(frozen=True)
class SgdSettings:
    """Keras SGD's hyper-parameters, for ``PlanFit`` (no Keras optimizer needed): the values a
    ``keras.optimizers.SGD`` holds (its learning rate is a float32 variable)."""

    learning_rate: float
    momentum: float = 0.0
    nesterov: bool = False
    momentums: tuple = ()  # the momentum slots, as SgdLoop reads them (PlanFit: zeros)


class PlanFit:
    """``fit_fast`` for a plan of numpy arrays and plain SGD, without Keras: the compiled loop (or
    the numpy one where numba is missing), the same bits as ``fit_fast`` on a Keras model holding
    the same weights. Call ``epoch(e)`` for e = 0, 1, ...; between calls ``loop.w`` / ``loop.b``
    hold the weights, ``steps`` the optimizer steps so far, and ``loop.write_back(steps)``
    copies them into Keras variables once ``loop.vars`` and ``loop.optimizer`` are a model's.
    """

    def __init__(self, plan: list[Dense], sgd: SgdSettings, x_train, y_train, x_val, y_val, *,
                 batch_size: int, seed: int, shuffle: bool = True, threads: int | None = None):
        _check_choice("auto", threads)
        x, y, xv, yv = _data(plan, x_train, y_train, x_val, y_val)
        _check_epochs(batch_size, 0, 0)
        if sgd.momentum:  # Keras' momentum slots start at zero
            zeros = tuple(np.zeros(v.shape, np.float32) for d in plan for v in (d.kernel, d.bias))
            sgd = dataclasses.replace(sgd, momentums=zeros)
        with ThreadPoolExecutor(1) as pool:  # numpy scales uint8 rows without the GIL: beside
            scaled = pool.submit(_floats, xv)  # the engine's load (~0.1 s of a run's start)
            self.loop, self._limit, chosen = _make_loop(plan, sgd, True, batch_size, x, y,
                                                        len(xv), "auto", threads)
            xv = scaled.result()
        self._data, self._seed, self._shuffle = (x, y, xv, yv), seed, shuffle
        self.steps = 0
        self._record = lambda: _engine_record(self.loop, chosen, threads)

    def epoch(self, epoch: int) -> dict:
        """Train epoch ``epoch`` (in its seeded order) and validate; return its logs."""
        logs, done = _shuffled_epoch(self.loop, self._limit, self._data, self._seed, epoch,
                                     self._shuffle)
        self.steps += done
        return logs

    @property
    def engine(self) -> dict:
        """Which path and threads trained (``History.engine``)."""
        return self._record()


def _check_epochs(batch_size: int, epochs: int, initial_epoch: int) -> None:
    if batch_size < 1 or epochs < initial_epoch or initial_epoch < 0:
        raise ModelError(
            f"need batch_size >= 1 and 0 <= initial_epoch <= epochs; received "
            f"batch_size={batch_size}, initial_epoch={initial_epoch}, epochs={epochs}"
        )


def _engine_record(loop, chosen: str, threads) -> dict:
    """Which path and threads trained: ``History.engine``."""
    engine = {"path": chosen, "threads": threads,
              "threads_used": list(loop.used) if isinstance(loop, SgdLoop) else None}
    if getattr(loop, "replica_epochs", 0):  # trained on numpy while the kernels compiled
        engine["replica_epochs"] = loop.replica_epochs
    if chosen == "compiled":
        from mnistlab.engine.kernels import NUMERICS

        engine["numerics"] = NUMERICS
    return engine


def _check_choice(path: str, threads) -> None:
    if path not in PATHS:
        raise TrainingError(f"path must be one of {', '.join(PATHS)}; received {path!r}")
    if threads not in (None, 1, 2):
        raise TrainingError(f"threads must be None (measure), 1 or 2; received {threads!r}")


# --------------------------------------------------------------------------- choosing the loop
def _make_loop(plan, optimizer, sgd: bool, batch_size: int, x, y, n_val: int, path: str,
               threads):
    """The loop for ``path``: ``(loop, blas_limit, chosen path)``; ``blas_limit()`` is the
    context each epoch runs in. ``sgd``: the optimizer is plain SGD the SGD loops can run."""
    if path in ("compiled", "numpy") and not sgd:
        raise TrainingError(
            f"path={path!r} trains plain keras.optimizers.SGD (no clipping, weight decay, EMA, "
            "schedule...) with relu, tanh, sigmoid or linear hidden layers; use path='auto' or "
            f"'scan'. Received {type(optimizer).__name__} and hidden activations "
            f"{[d.activation for d in plan[:-1]]}"
        )
    if path == "scan" or not sgd:
        from mnistlab.engine.scan_loop import ScanLoop

        return ScanLoop(plan, optimizer, batch_size, _floats(x), y), contextlib.nullcontext, "scan"
    # One BLAS thread by default: for the small products OpenBLAS' second thread costs more
    # in hand-offs than it saves. The numpy loop raises numpy's to two for the first layer's big
    # products itself (numpy_loop.FirstLayer), where that is proven not to change the result,
    # unless the caller had limited BLAS to one thread (read before our own limit).
    from threadpoolctl import ThreadpoolController

    blas = Threads()
    controller = ThreadpoolController()
    blas_limit = lambda: controller.limit(limits=1, user_api="blas")  # noqa: E731
    n_in = plan[0].kernel.shape[0]
    with blas_limit():  # the start-up probe too: the caller's count comes back afterwards
        if path != "numpy" and _jit_available(plan, 1 if path == "compiled" else blas.most):
            from mnistlab.engine.jit_loop import JitLoop

            loop = JitLoop(plan, optimizer, batch_size, n_in, len(x), blas.most, threads)
            return loop, blas_limit, "compiled"
        if path == "compiled":
            raise TrainingError(
                "the compiled path cannot train this model here: it needs numba and numpy on "
                "OpenBLAS, and no Dropout; use path='auto' or 'numpy'. Received dropout rates "
                f"{[d.dropout for d in plan]}"
            )
        from mnistlab.engine.numpy_loop import NumpyLoop

        loop = NumpyLoop(plan, optimizer, batch_size, n_in, len(x), n_val, blas, threads)
        return loop, blas_limit, "numpy"


def _sgd_supported(plan: list[Dense], optimizer) -> bool:
    """Can the compiled or numpy loop train this: plain Keras SGD, known hidden activations?"""
    import keras

    if type(optimizer) is not keras.optimizers.SGD:
        return False
    cfg = optimizer.get_config()
    plain = all(cfg.get(k) in (None, False) for k in OPTIMIZER_EXTRAS)
    hidden_ok = all(d.activation in SGD_ACTIVATIONS for d in plan[:-1])
    return plain and hidden_ok and isinstance(cfg["learning_rate"], float)


def _jit_available(plan: list[Dense], most_threads: int) -> bool:
    """Should the compiled loop (``engine.jit_loop``) train this plan here?"""
    from mnistlab.engine.jit_loop import available

    try:
        return available(plan, most_threads)
    except ImportError:  # no numba, or numpy is not on OpenBLAS
        return False


# --------------------------------------------------------------------------- the data
def _data(plan, x_train, y_train, x_val, y_val):
    """Flat rows and int labels ``(x, y, xv, yv)``, checked against the plan."""
    n_in, n_classes = plan[0].kernel.shape[0], plan[-1].kernel.shape[1]
    x = _flat(x_train, n_in, "x_train")
    y = int_labels(y_train, n_classes, "y_train")
    xv = _flat(x_val, n_in, "x_val") if x_val is not None else np.empty((0, n_in), np.float32)
    yv = int_labels(y_val, n_classes, "y_val") if y_val is not None else np.empty(0, np.int64)
    if len(x) != len(y) or len(xv) != len(yv) or not len(x):
        raise ModelError(
            "x and y must have the same, non-zero number of samples; received "
            f"{len(x)}/{len(y)} train and {len(xv)}/{len(yv)} validation"
        )
    return x, y, xv, yv


def _flat(x: np.ndarray, n_in: int, what: str) -> np.ndarray:
    """Rows ``(N, n_in)``: uint8 pixels stay uint8 (scaled per batch), anything else float32."""
    x = np.asarray(x)
    x = np.ascontiguousarray(x, dtype=np.uint8 if x.dtype == np.uint8 else np.float32)
    x = x.reshape(len(x), -1)
    if x.shape[1] != n_in:
        raise ModelError(
            f"{what} has {x.shape[1]} values per image but the model's first Dense layer "
            f"expects {n_in}; check the image size. Received {what}.shape={x.shape}"
        )
    return x


def _floats(x: np.ndarray) -> np.ndarray:
    from mnistlab.model import to_input

    return to_input(x) if x.dtype == np.uint8 else x


def int_labels(y: np.ndarray, n_classes: int, what: str) -> np.ndarray:
    """Int labels ``(N,)`` from int or one-hot labels, checked against ``n_classes``."""
    y = np.asarray(y)
    if y.ndim == 2:  # one-hot
        y = y.argmax(1)
    y = y.astype(np.int64)
    if y.ndim != 1 or (len(y) and (y.min() < 0 or y.max() >= n_classes)):
        raise ModelError(
            f"{what} must be int labels (N,) in 0..{n_classes - 1} or one-hot (N, {n_classes}); "
            f"received shape {y.shape}, range {y.min() if len(y) else None}.."
            f"{y.max() if len(y) else None}"
        )
    return y


# --------------------------------------------------------------------------- the epochs
def _train(model, loop, blas_limit, data, *, seed, shuffle, epochs, initial_epoch, callbacks,
           verbose, steps) -> History:
    """Run epochs ``initial_epoch..epochs-1`` with Keras' callback protocol around them."""
    import keras

    x, y, xv, yv = data
    keras_cbs = [c for c in callbacks if isinstance(c, keras.callbacks.Callback)]
    plain_cbs = [c for c in callbacks if not isinstance(c, keras.callbacks.Callback)]
    cbl = keras.callbacks.CallbackList(
        keras_cbs, add_progbar=verbose != 0, model=model, verbose=verbose, epochs=epochs,
        steps=steps,
    )
    history = _new_history(len(xv))
    model.stop_training = False
    logs = None
    cbl.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        cbl.on_epoch_begin(epoch)
        for c in plain_cbs:
            if hasattr(c, "on_epoch_begin"):
                c.on_epoch_begin(epoch)
        logs, done = _shuffled_epoch(loop, blas_limit, data, seed, epoch, shuffle)
        for key, value in logs.items():
            history[key].append(value)
        loop.write_back(done)
        cbl.on_epoch_end(epoch, dict(logs))
        stop = [bool(c.on_epoch_end(epoch, dict(logs))) for c in plain_cbs]
        if model.stop_training or any(stop):
            break
    cbl.on_train_end(dict(logs) if logs else None)
    return history


def _new_history(n_val: int) -> History:
    history = History(loss=[], accuracy=[])
    if n_val:
        history.update(val_loss=[], val_accuracy=[])
    return history


def _shuffled_epoch(loop, blas_limit, data, seed: int, epoch: int, shuffle: bool):
    """Train epoch ``epoch`` in its seeded order and validate: ``(logs, optimizer steps)``."""
    n = len(data[0])
    order = permutation(seed, epoch, n) if shuffle else np.arange(n)
    with blas_limit():
        return _epoch(loop, data, order, seed, epoch)


def _epoch(loop, data, order, seed: int, epoch: int) -> tuple[dict, int]:
    """Train one epoch and validate: ``(logs, optimizer steps)``."""
    x, y, xv, yv = data
    if isinstance(loop, SgdLoop):
        rng = np.random.default_rng([seed, epoch, 1])
        loss_sum, correct, steps = loop.train_epoch(x, y, order, rng)
    else:
        loss_sum, correct, steps = loop.train_epoch(x, y, order, (seed, epoch))
    logs = {"loss": loss_sum / len(x), "accuracy": correct / len(x)}
    if len(xv):
        p = loop.predict(xv)
        logs["val_loss"] = float(cross_entropy(p, yv).astype(np.float64).mean())
        logs["val_accuracy"] = float((p.argmax(1) == yv).mean())
    return logs, steps
