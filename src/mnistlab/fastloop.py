"""A training loop for the tutorial's MLP that runs close to what the hardware allows.

``keras.Model.fit`` pays a fixed cost per step (dispatch, XLA's per-op overhead for small matrices)
that dwarfs the arithmetic of a 784-100-64-32-10 network. ``fit_fast`` trains the same model with
the same semantics on one of three paths:

* **compiled** (``mnistlab.jitloop``) — a whole epoch of SGD per call into numba-compiled code,
  the matrix products on numpy's OpenBLAS, two threads splitting each step by data (bit-identical
  to one). Used for ``keras.optimizers.SGD`` (with or without momentum / Nesterov) when no
  gradient clipping, weight decay, EMA, gradient accumulation, loss scaling or learning-rate
  schedule is set, the hidden activations are relu, tanh, sigmoid or linear, and there is no
  dropout. Works on any Keras backend.
* **numpy** (``mnistlab.numpyloop``) — the same SGD written out with float32 numpy and OpenBLAS
  sgemm into preallocated buffers, the first layer's two big products on two BLAS threads
  (bit-identical to one). Used for SGD models with dropout, or where numba or numpy's OpenBLAS
  is missing.
* **scan** — the whole epoch as one jitted ``jax.lax.scan``: a hand-written forward pass,
  ``jax.grad`` and the optimizer's own ``stateless_apply``, so every Keras optimizer and every
  hyper-parameter works. Needs the JAX backend.

Both paths share the semantics of ``Model.fit`` with ``loss="categorical_crossentropy"`` on the
softmax output: mean loss over the batch with Keras' clipping (1e-7), the last partial batch
included, one optimizer step per batch, history values averaged over batches weighted by batch size,
inverted dropout while training. Validation runs once per epoch without dropout.

Shuffling is seeded: epoch ``e`` uses ``numpy.random.default_rng([seed, e]).permutation(n)``
(the same order as ``mnistlab.training.epoch_permutation``), and dropout masks are drawn from
``(seed, e)`` too, so resuming at ``initial_epoch=k`` from a checkpoint of the model and optimizer
variables gives bit-identical weights to an uninterrupted run. Weight
initialisation is the model's own business (build it after ``keras.utils.set_random_seed``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from mnistlab.blas import Threads
from mnistlab.errors import ModelError, TrainingError
from mnistlab.numpyloop import NumpyLoop
from mnistlab.sgdloop import EPSILON, SgdLoop

_NUMPY_ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")
USE_JIT = True  # False: plain SGD always on the numpy loop (tests compare the two)


@dataclass
class _Dense:
    """One Dense layer of the network, with the dropout rate applied to its input."""

    kernel: object  # keras.Variable (in, out)
    bias: object | None  # keras.Variable (out,) or None
    activation: str  # keras name of the activation
    fn: object  # the activation function itself
    dropout: float


def _activation_name(fn) -> str:
    """The Keras name of a built-in activation, or ``"custom"``.

    Not ``keras.activations.serialize``: it imports TensorFlow when installed (~400 MB of RSS).
    """
    import keras

    name = getattr(fn, "__name__", "")
    try:
        return name if keras.activations.get(name) is fn else "custom"
    except ValueError:
        return "custom"


def _plan(model) -> list[_Dense]:
    """Read a model of Flatten / Dense / Dropout layers into a list of ``_Dense``.

    Raises:
        ModelError: the model has another kind of layer, regularizers, frozen or non-float32
            layers, or an output layer that is not a softmax.
    """
    import keras

    if not model.built:
        raise ModelError(
            "fit_fast needs a built model; call model.build(...) or pass an Input first"
        )
    plan: list[_Dense] = []
    rate = 0.0
    for layer in model.layers:
        kind = type(layer).__name__
        if isinstance(layer, keras.layers.Flatten | keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Dropout):
            if rate:
                raise ModelError(
                    "fit_fast supports one Dropout between two Dense layers; merge them into one. "
                    f"Received two in a row before layer {layer.name!r}"
                )
            if layer.noise_shape is not None:
                raise ModelError(
                    f"Dropout noise_shape is not supported; received {layer.noise_shape}"
                )
            rate = float(layer.rate)
            continue
        if not isinstance(layer, keras.layers.Dense):
            raise ModelError(
                "fit_fast trains Flatten + Dense (+ Dropout) models only; use loop='fit' for "
                f"others. Received layer {layer.name!r} of type {kind}"
            )
        extras = [
            n
            for n in (
                "kernel_regularizer",
                "bias_regularizer",
                "activity_regularizer",
                "kernel_constraint",
                "bias_constraint",
            )
            if getattr(layer, n, None) is not None
        ]
        if extras or getattr(layer, "lora_enabled", False):
            raise ModelError(
                f"layer {layer.name!r} uses {extras or 'LoRA'}, which fit_fast does not apply; "
                "use loop='fit'"
            )
        if not layer.trainable or layer.kernel.dtype != "float32":
            raise ModelError(
                f"fit_fast trains float32, trainable Dense layers; layer {layer.name!r} has "
                f"trainable={layer.trainable}, dtype={layer.kernel.dtype}. Use loop='fit'"
            )
        name = _activation_name(layer.activation)
        plan.append(_Dense(layer.kernel, layer.bias, name, layer.activation, rate))
        rate = 0.0
    if not plan or plan[-1].activation != "softmax":
        got = plan[-1].activation if plan else "no Dense layer"
        raise ModelError(
            "fit_fast trains with categorical cross-entropy on a softmax output; the last Dense "
            f"layer must use activation='softmax'. Received {got}"
        )
    if rate:
        raise ModelError("a Dropout after the output layer has no effect in fit; remove it")
    owned = {id(v) for d in plan for v in (d.kernel, d.bias) if v is not None}
    if {id(v) for v in model.trainable_variables} != owned:
        raise ModelError(
            "the model has trainable variables outside its Dense layers; use loop='fit'"
        )
    return plan


def _params(plan: list[_Dense]) -> list:
    return [v for d in plan for v in (d.kernel, d.bias) if v is not None]


def _numpy_supported(plan: list[_Dense], optimizer) -> bool:
    import keras

    if type(optimizer) is not keras.optimizers.SGD:
        return False
    cfg = optimizer.get_config()
    plain = all(
        cfg.get(k) in (None, False)
        for k in (
            "weight_decay",
            "clipnorm",
            "clipvalue",
            "global_clipnorm",
            "use_ema",
            "loss_scale_factor",
            "gradient_accumulation_steps",
        )
    )
    hidden_ok = all(d.activation in _NUMPY_ACTIVATIONS for d in plan[:-1])
    return plain and hidden_ok and isinstance(cfg["learning_rate"], float)


def _jit_available(plan: list[_Dense], most_threads: int) -> bool:
    """Should the compiled loop (``mnistlab.jitloop``) train this plan here?"""
    from mnistlab.jitloop import available

    try:
        return available(plan, most_threads)
    except ImportError:  # no numba, or numpy is not on OpenBLAS
        return False


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Return the training order of one epoch: int64 ``(n,)``, a permutation of ``range(n)``."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _cross_entropy(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Keras' categorical cross-entropy per sample: float32 ``(N,)`` from probs ``(N, C)``."""
    pt = np.take_along_axis(p, y[:, None], 1)[:, 0] / p.sum(1)
    return -np.log(np.clip(pt, np.float32(EPSILON), np.float32(1 - EPSILON)))


# --------------------------------------------------------------------------- scan path
class _ScanLoop:
    """The whole epoch as one jitted ``lax.scan`` with the optimizer's ``stateless_apply``."""

    def __init__(self, plan, optimizer, batch_size: int, n_in: int, x, y):
        import jax
        import jax.numpy as jnp
        import keras

        if keras.backend.backend() != "jax":
            raise TrainingError(
                "this model/optimizer needs fit_fast's JAX path (only plain SGD runs on numpy); "
                f"set KERAS_BACKEND=jax or use loop='fit'. Received backend "
                f"{keras.backend.backend()!r}"
            )
        self.plan, self.optimizer, self.bs = plan, optimizer, batch_size
        self.vars = _params(plan)
        self.x = jnp.asarray(x)
        self.y = jnp.asarray(y, jnp.int32)
        self.tv = [jnp.asarray(keras.ops.convert_to_numpy(v)) for v in self.vars]
        self.ov = [jnp.asarray(keras.ops.convert_to_numpy(v)) for v in optimizer.variables]
        self.n = len(x)
        self.steps = math.ceil(self.n / batch_size)
        has_bias = [d.bias is not None for d in plan]

        def forward(params, xb, key):
            a, i = xb, 0
            for j, d in enumerate(plan):
                if key is not None and d.dropout:
                    keep = 1.0 - d.dropout
                    mask = jax.random.bernoulli(jax.random.fold_in(key, j), keep, a.shape)
                    a = jnp.where(mask, a / keep, 0.0)
                a = a @ params[i]
                if has_bias[j]:
                    a = a + params[i + 1]
                i += 2 if has_bias[j] else 1
                a = d.fn(a)  # the last one is softmax
            return a

        def loss_fn(params, xb, yb, wb, key):
            p = forward(params, xb, key)
            p = p / p.sum(-1, keepdims=True)
            p = jnp.clip(p, EPSILON, 1.0 - EPSILON)
            per = -jnp.take_along_axis(jnp.log(p), yb[:, None], 1)[:, 0]
            correct = (jnp.argmax(p, -1) == yb).astype(jnp.float32)
            return (per * wb).sum() / wb.sum(), (per * wb, correct * wb)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        steps, bs, n = self.steps, batch_size, self.n

        def epoch(tv, ov, xs, ys, order, key):
            def body(state, i):
                tv, ov = state
                idx = jax.lax.dynamic_slice_in_dim(order, i * bs, bs)
                wb = (jnp.arange(bs) + i * bs < n).astype(jnp.float32)
                (_, (per, correct)), grads = grad_fn(
                    tv, xs[idx], ys[idx], wb, jax.random.fold_in(key, i)
                )
                tv, ov = optimizer.stateless_apply(ov, grads, tv)
                return (tv, ov), (per.sum(), correct.sum())

            (tv, ov), (losses, corrects) = jax.lax.scan(body, (tv, ov), jnp.arange(steps))
            return tv, ov, losses.sum(), corrects.sum()

        self._epoch = jax.jit(epoch, donate_argnums=(0, 1))
        self._predict = jax.jit(lambda params, xb: forward(params, xb, None))
        self._jax = jax

    def train_epoch(self, x, y, order, seed_epoch) -> tuple[float, float, int]:
        jax, jnp = self._jax, self._jax.numpy
        padded = np.zeros(self.steps * self.bs, np.int32)
        padded[: self.n] = order
        key = jax.random.fold_in(jax.random.key(seed_epoch[0]), seed_epoch[1])
        self.tv, self.ov, loss, correct = self._epoch(
            self.tv, self.ov, self.x, self.y, jnp.asarray(padded), key
        )
        return float(loss), float(correct), self.steps

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(self.tv, x))

    def write_back(self, steps: int) -> None:
        for v, t in zip(self.vars, self.tv, strict=True):
            v.assign(t)
        for v, t in zip(self.optimizer.variables, self.ov, strict=True):
            v.assign(t)


# --------------------------------------------------------------------------- the loop
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


def _labels(y: np.ndarray, n_classes: int, what: str) -> np.ndarray:
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
) -> dict[str, list[float]]:
    """Train ``model`` like ``model.fit`` with categorical cross-entropy, but much faster.

    Args:
        model: a built Keras model of Flatten + Dense (+ Dropout) layers ending in a softmax Dense.
        x_train: float32 ``(N, H, W)`` (or ``(N, D)``) in [0, 1], or uint8 pixels 0-255, which are
            scaled per batch with ``mnistlab.model.to_input`` (same values, a quarter of the
            memory, and no float32 copy of the whole set to make).
        y_train: int labels ``(N,)`` (or one-hot ``(N, C)``).
        x_val: like ``x_train``; may be empty (``M = 0``), then no ``val_*`` entries.
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
            returning True to stop. The model's variables hold the epoch's weights when they run.
        verbose: 0 silent; 1 or 2 shows Keras' progress bar (one line per epoch).

    Returns:
        ``{"loss", "accuracy", "val_loss", "val_accuracy"}``, one float per trained epoch.

    Raises:
        ModelError: the model is not a supported MLP, or the data does not fit it.
        TrainingError: the optimizer needs the JAX path and the backend is not JAX.
    """
    import keras

    plan = _plan(model)
    n_in, n_classes = plan[0].kernel.shape[0], plan[-1].kernel.shape[1]
    x = _flat(x_train, n_in, "x_train")
    y = _labels(y_train, n_classes, "y_train")
    xv = _flat(x_val, n_in, "x_val") if x_val is not None else np.empty((0, n_in), np.float32)
    yv = _labels(y_val, n_classes, "y_val") if y_val is not None else np.empty(0, np.int64)
    if len(x) != len(y) or len(xv) != len(yv) or not len(x):
        raise ModelError(
            "x and y must have the same, non-zero number of samples; received "
            f"{len(x)}/{len(y)} train and {len(xv)}/{len(yv)} validation"
        )
    if batch_size < 1 or epochs < initial_epoch or initial_epoch < 0:
        raise ModelError(
            f"need batch_size >= 1 and 0 <= initial_epoch <= epochs; received "
            f"batch_size={batch_size}, initial_epoch={initial_epoch}, epochs={epochs}"
        )
    optimizer.build(model.trainable_variables)
    if _numpy_supported(plan, optimizer):
        # One BLAS thread by default: for the small products OpenBLAS' second thread costs more
        # in hand-offs than it saves. The loop raises numpy's to two for the first layer's big
        # products itself (numpyloop.FirstLayer), where that is proven not to change the result,
        # unless the caller had limited BLAS to one thread (read before our own limit).
        from threadpoolctl import ThreadpoolController

        threads = Threads()
        controller = ThreadpoolController()
        blas_limit = lambda: controller.limit(limits=1, user_api="blas")  # noqa: E731
        with blas_limit():  # the start-up probe too: the caller's count comes back afterwards
            if USE_JIT and _jit_available(plan, threads.most):
                from mnistlab.jitloop import JitLoop

                loop = JitLoop(plan, optimizer, batch_size, n_in, len(x), threads.most)
            else:
                loop = NumpyLoop(plan, optimizer, batch_size, n_in, len(x), len(xv), threads)
        xv = _floats(xv)  # validated every epoch: scaled once (4 ms an epoch on full size)
    else:
        loop = _ScanLoop(plan, optimizer, batch_size, n_in, _floats(x), y)
        xv = _floats(xv)
        blas_limit = contextlib.nullcontext

    keras_cbs = [c for c in callbacks if isinstance(c, keras.callbacks.Callback)]
    plain_cbs = [c for c in callbacks if not isinstance(c, keras.callbacks.Callback)]
    steps_per_epoch = math.ceil(len(x) / batch_size)
    cbl = keras.callbacks.CallbackList(
        keras_cbs,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    if len(xv):
        history.update(val_loss=[], val_accuracy=[])
    model.stop_training = False
    logs = None
    cbl.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        cbl.on_epoch_begin(epoch)
        order = permutation(seed, epoch, len(x)) if shuffle else np.arange(len(x))
        with blas_limit():
            if isinstance(loop, SgdLoop):
                rng = np.random.default_rng([seed, epoch, 1])
                loss_sum, correct, steps = loop.train_epoch(x, y, order, rng)
            else:
                loss_sum, correct, steps = loop.train_epoch(x, y, order, (seed, epoch))
            logs = {"loss": loss_sum / len(x), "accuracy": correct / len(x)}
            if len(xv):
                p = loop.predict(xv)
                logs["val_loss"] = float(_cross_entropy(p, yv).astype(np.float64).mean())
                logs["val_accuracy"] = float((p.argmax(1) == yv).mean())
        for key, value in logs.items():
            history[key].append(value)
        loop.write_back(steps)
        cbl.on_epoch_end(epoch, dict(logs))
        stop = [bool(c.on_epoch_end(epoch, dict(logs))) for c in plain_cbs]
        if model.stop_training or any(stop):
            break
    cbl.on_train_end(dict(logs) if logs else None)
    return history
