"""``fit_fast``'s scan path: the whole epoch as one jitted ``jax.lax.scan``.

A hand-written forward pass, ``jax.grad`` and the optimizer's own ``stateless_apply``, so every
Keras optimizer and every hyper-parameter works. Needs the JAX backend.
"""

from __future__ import annotations

import math

import numpy as np

from mnistlab.engine.loss import EPSILON
from mnistlab.engine.plan import parameters
from mnistlab.errors import TrainingError


def _forward(plan, params, xb, key):
    """Softmax probabilities of ``xb``; dropout (inverted) where ``key`` is not None."""
    import jax
    import jax.numpy as jnp

    a, i = xb, 0
    for j, d in enumerate(plan):
        if key is not None and d.dropout:
            keep = 1.0 - d.dropout
            mask = jax.random.bernoulli(jax.random.fold_in(key, j), keep, a.shape)
            a = jnp.where(mask, a / keep, 0.0)
        a = a @ params[i]
        if d.bias is not None:
            a = a + params[i + 1]
        i += 2 if d.bias is not None else 1
        a = d.fn(a)  # the last one is softmax
    return a


def _loss(plan, params, xb, yb, wb, key):
    """Keras' categorical cross-entropy of a batch, rows weighted by ``wb`` (0: padding);
    returns the mean and, per row, the weighted loss and whether it was right."""
    import jax.numpy as jnp

    p = _forward(plan, params, xb, key)
    p = p / p.sum(-1, keepdims=True)
    p = jnp.clip(p, EPSILON, 1.0 - EPSILON)
    per = -jnp.take_along_axis(jnp.log(p), yb[:, None], 1)[:, 0]
    correct = (jnp.argmax(p, -1) == yb).astype(jnp.float32)
    return (per * wb).sum() / wb.sum(), (per * wb, correct * wb)


def _epoch_fn(plan, optimizer, steps: int, bs: int, n: int):
    """One epoch of ``steps`` batches of ``bs`` out of ``n`` rows (the last one padded)."""
    import jax
    import jax.numpy as jnp

    grad_fn = jax.value_and_grad(lambda *a: _loss(plan, *a), has_aux=True)

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

    return epoch


class ScanLoop:
    """The whole epoch as one jitted ``lax.scan`` with the optimizer's ``stateless_apply``.

    Raises:
        TrainingError: the Keras backend is not JAX.
    """

    def __init__(self, plan, optimizer, batch_size: int, x, y):
        import keras

        if keras.backend.backend() != "jax":
            raise TrainingError(
                "this model/optimizer needs fit_fast's JAX path (only plain SGD runs on numpy); "
                f"set KERAS_BACKEND=jax or use loop='fit'. Received backend "
                f"{keras.backend.backend()!r}"
            )
        import jax
        import jax.numpy as jnp

        self.plan, self.optimizer, self.bs = plan, optimizer, batch_size
        self.vars = parameters(plan)
        self.x = jnp.asarray(x)
        self.y = jnp.asarray(y, jnp.int32)
        self.tv = [jnp.asarray(keras.ops.convert_to_numpy(v)) for v in self.vars]
        self.ov = [jnp.asarray(keras.ops.convert_to_numpy(v)) for v in optimizer.variables]
        self.n = len(x)
        self.steps = math.ceil(self.n / batch_size)
        epoch = _epoch_fn(plan, optimizer, self.steps, batch_size, self.n)
        self._epoch = jax.jit(epoch, donate_argnums=(0, 1))
        self._predict = jax.jit(lambda params, xb: _forward(plan, params, xb, None))
        self._jax = jax

    def train_epoch(self, x, y, order, seed_epoch) -> tuple[float, float, int]:
        """Run one epoch over ``order``; return (sum of losses, number correct, steps)."""
        jax, jnp = self._jax, self._jax.numpy
        padded = np.zeros(self.steps * self.bs, np.int32)
        padded[: self.n] = order
        key = jax.random.fold_in(jax.random.key(seed_epoch[0]), seed_epoch[1])
        self.tv, self.ov, loss, correct = self._epoch(
            self.tv, self.ov, self.x, self.y, jnp.asarray(padded), key
        )
        return float(loss), float(correct), self.steps

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities float32 ``(N, C)`` of float32 rows ``(N, D)``."""
        return np.asarray(self._predict(self.tv, x))

    def write_back(self, steps: int) -> None:
        """Copy weights and optimizer state into the Keras variables."""
        for v, t in zip(self.vars, self.tv, strict=True):
            v.assign(t)
        for v, t in zip(self.optimizer.variables, self.ov, strict=True):
            v.assign(t)
