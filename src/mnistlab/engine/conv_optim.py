"""Keras Adam and SGD for the conv engine (a constant learning rate or a cosine decay): state read
from and written back to Keras variables."""

from __future__ import annotations

import math

import numpy as np

from mnistlab.engine.fit import OPTIMIZER_EXTRAS
from mnistlab.errors import ModelError

_PLAIN = OPTIMIZER_EXTRAS  # the same optimizer settings the MLP engine refuses


def _slots(optimizer, variables, suffix: str) -> list:
    """The optimizer's per-variable slot (``momentum``/``velocity``) of each model variable, found
    by the name Keras gives it (``<variable path with _>_<suffix>``)."""
    by_name = {v.name: v for v in optimizer.variables}
    slots = []
    for v in variables:
        name = f"{v.path.replace('/', '_')}_{suffix}"
        if name not in by_name:
            raise ModelError(
                f"cannot find the optimizer's {suffix} of variable {v.path!r}; build the "
                f"optimizer on model.trainable_variables. Received slots {sorted(by_name)[:4]}..."
            )
        slots.append(by_name[name])
    return slots


class Optim:
    """Adam or SGD over the flat parameters of a ``ConvPlan``, with Keras' update rules.

    Raises:
        ModelError: another optimizer, or an option the engine does not apply.
    """

    def __init__(self, optimizer, plan):
        import keras

        kind = type(optimizer)
        if kind not in (keras.optimizers.Adam, keras.optimizers.SGD):
            raise ModelError(
                "the conv engine trains with keras.optimizers.Adam or SGD; use loop='fit' for "
                f"others. Received {kind.__name__}"
            )
        cfg = optimizer.get_config()
        extras = [k for k in _PLAIN if cfg.get(k) not in (None, False)]
        self.cosine = _cosine(optimizer)
        plain_lr = isinstance(cfg["learning_rate"], float) or self.cosine is not None
        if extras or cfg.get("amsgrad") or not plain_lr:
            raise ModelError(
                "the conv engine applies a constant float learning rate or a CosineDecay "
                f"(no warm-up), without {', '.join(_PLAIN)} or amsgrad; received {extras or cfg}"
            )
        if not optimizer.built:
            optimizer.build(plan.variables)
        self.optimizer, self.plan, self.cfg = optimizer, plan, cfg
        self.adam = kind is keras.optimizers.Adam
        self.lr = None if self.cosine else np.float32(cfg["learning_rate"])
        self.iterations = int(keras.ops.convert_to_numpy(optimizer.iterations))
        names = ["momentum", "velocity"] if self.adam else ["momentum"] * bool(cfg["momentum"])
        self.slots = [_slots(optimizer, plan.variables, n) for n in names]
        self.state = [self._flat(s) for s in self.slots]
        if not self.state:
            self.state = [np.zeros(0, np.float32)]

    def _flat(self, slots) -> np.ndarray:
        import keras

        return np.concatenate(
            [np.asarray(keras.ops.convert_to_numpy(v), np.float32).ravel() for v in slots]
        )

    def step(self, partial: np.ndarray, n_chunks: int) -> None:
        """Sum the chunk gradients ``partial[:n_chunks]`` and update the plan's parameters."""
        from mnistlab.engine import conv_kernels as K

        lr = self._learning_rate()
        self.iterations += 1
        p = self.plan.params
        if self.adam:
            # as keras.optimizers.Adam.update_step computes it, in float32
            t = np.float32(self.iterations)
            b1, b2 = np.float32(self.cfg["beta_1"]), np.float32(self.cfg["beta_2"])
            one = np.float32(1)
            lr_t = lr * np.sqrt(one - np.power(b2, t)) / (one - np.power(b1, t))
            K.reduce_adam(partial, n_chunks, p, self.state[0], self.state[1], np.float32(lr_t),
                          b1, b2, np.float32(self.cfg["epsilon"]))
        else:
            K.reduce_sgd(partial, n_chunks, p, self.state[0], lr,
                         np.float32(self.cfg["momentum"]), bool(self.cfg["nesterov"]))

    def _learning_rate(self) -> np.float32:
        """This step's learning rate: the constant, or ``CosineDecay`` at the optimizer's
        iteration count before the step (as Keras evaluates it), in float32 as Keras does."""
        if self.cosine is None:
            return self.lr
        f = np.float32
        lr0, steps, alpha = self.cosine
        done = min(f(self.iterations), steps) / steps
        decayed = f(1 - float(alpha)) * (f(0.5) * (f(1) + np.cos(f(math.pi) * done))) + alpha
        return f(lr0 * decayed)

    def write_back(self) -> None:
        """Copy the slots and the iteration count into the Keras optimizer."""
        for slots, flat in zip(self.slots, self.state, strict=False):
            off = 0
            for v in slots:
                size = math.prod(v.shape)
                v.assign(flat[off : off + size].reshape(v.shape))
                off += size
        self.optimizer.iterations.assign(self.iterations)


def _cosine(optimizer):
    """``(initial rate, decay steps, alpha)`` as float32 if the optimizer's learning rate is a
    ``keras.optimizers.schedules.CosineDecay`` without warm-up, else None."""
    import keras

    sched = getattr(optimizer, "_learning_rate", None)
    if type(sched) is not keras.optimizers.schedules.CosineDecay or sched.warmup_target is not None:
        return None
    return (np.float32(sched.initial_learning_rate), np.float32(sched.decay_steps),
            np.float32(sched.alpha))
