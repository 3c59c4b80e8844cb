"""Training that starts before Keras is loaded: the tutorial's MLP on the compiled SGD loop.

Importing Keras (with JAX) and building the model take about a second, and until now the first
epoch waited for both. For a new run that the SGD loops train (``starts_without_keras``), the
initial weights come from ``engine.init`` (Keras' own, bit for bit), the loop trains them from
numpy arrays (``engine.fit.PlanFit``) and checkpoints are written from those arrays. After the
first epoch a thread imports Keras and builds and compiles the model; the epoch kernels release
the GIL, so the import runs while they train, on one thread meanwhile so that the import has the
other core. After the last epoch the trained weights, the step count and any momentum go into
the Keras model, which then evaluates and saves the run as always. When a template of the model's
Keras files is kept (``mnistlab.keras_files``: an earlier run of the same model made it), the
thread never starts: the run finishes from its arrays (``mnistlab.finish``) without Keras or JAX.
A run trained this way has the same bits as one trained through ``fit_fast`` on the Keras model
(``tests/test_headstart.py``).
"""

from __future__ import annotations

import threading

import numpy as np

from mnistlab.backend import active
from mnistlab.config import Config
from mnistlab.engine.fit import SGD_ACTIVATIONS
from mnistlab.epochs import trains_fast


def starts_without_keras(config: Config) -> bool:
    """Can a new run of ``config`` train before Keras is loaded: an MLP without dropout on the
    fast loop with plain SGD and a constant learning rate, on the JAX backend (whose initial
    weights ``engine.init`` reproduces), one device?"""
    t, m = config.train, config.model
    return (trains_fast(config) and m.kind == "mlp" and not m.dropout
            and m.activation in SGD_ACTIVATIONS and t.optimizer == "sgd"
            and t.schedule == "constant" and t.devices == "1" and active() == "jax")


class HeadStart:
    """One run's Keras-free training, and the Keras model built meanwhile.

    Args:
        config: the run's config (``starts_without_keras(config)`` holds).
        image_shape: the images' ``(H, W)``.
        num_classes: the softmax's width.
        steps_per_epoch: optimizer steps per epoch (for ``compile_model``).
    """

    def __init__(self, config: Config, image_shape: tuple[int, ...], num_classes: int,
                 steps_per_epoch: int):
        from mnistlab import keras_files
        from mnistlab.engine.init import mlp_weights

        self.config = config
        n_in = int(np.prod(image_shape))
        self.arrays = mlp_weights(config.model.hidden, n_in, num_classes, config.seed)
        # Keras' files for this model, kept by an earlier run: then Keras is not imported at all
        self.template_key = keras_files.key(config, image_shape, num_classes)
        self.template = keras_files.Template.load(self.template_key)
        self.fitting = None  # engine.fit.PlanFit, once training starts
        self.import_yielded = False  # did the Keras thread get nice 19 (``_yield_to_training``)?
        self._model = self._error = None
        self._thread = threading.Thread(
            target=self._build, args=(tuple(image_shape), num_classes, steps_per_epoch),
            name="mnistlab-keras", daemon=True)

    def _build(self, image_shape, num_classes, steps_per_epoch) -> None:
        try:
            from mnistlab.backend import import_keras
            from mnistlab.model import build_model, compile_model

            import_keras()
            model = build_model(self.config.model, image_shape, num_classes,
                                seed=self.config.seed)
            compile_model(model, self.config.train, steps_per_epoch)
            model.optimizer.build(model.trainable_variables)
            self._model = model
        except BaseException as e:  # handed to the caller by ``model()``
            self._error = e

    @property
    def params(self) -> int:
        """The model's parameter count (``model.count_params()``)."""
        return sum(a.size for a in self.arrays)

    def fit(self, x, y, xv, yv, on_epoch_end) -> dict:
        """Train every epoch, calling ``on_epoch_end.on_epoch_begin(epoch)`` and
        ``on_epoch_end(epoch, logs)`` (True: stop) around each; return the engine record
        (``fit_fast``'s, with ``started_without_keras``)."""
        from mnistlab.engine.fit import PlanFit, SgdSettings
        t = self.config.train
        plan = self.plan()
        sgd = SgdSettings(float(np.float32(t.learning_rate)), t.momentum, t.nesterov)
        self.fitting = PlanFit(plan, sgd, x, y, xv, yv, batch_size=t.batch_size,
                               seed=self.config.seed, shuffle=t.shuffle)
        loop = self.fitting.loop
        for epoch in range(t.epochs):
            # One thread while Keras loads on the other core: two training threads and the
            # import on two cores took longer than the import alone before training (the
            # threads wait for each other at every step). The same bits on one or two threads.
            loop.forced = 1 if self._thread.is_alive() else None
            on_epoch_end.on_epoch_begin(epoch)
            stop = on_epoch_end(epoch, self.fitting.epoch(epoch))
            # Only after the first epoch: loading the compiled kernels from numba's cache needs
            # the GIL, which the import would take turns at; the later epochs release it.
            if self._start() and loop.two_usable and loop.used[-1] == 1:
                # Two threads lost to one: another process has the other core. The import then
                # takes its turn after the training, not a third of both cores during it.
                self.import_yielded = _yield_to_training(self._thread)
            if stop:
                break
        loop.forced = None
        return {**self.fitting.engine, "started_without_keras": True,
                "keras_import_yielded": self.import_yielded}

    def checkpoint_values(self) -> tuple[list, list]:
        """What ``save_checkpoint`` would write from the Keras model now: the weights, then the
        optimizer's step count, learning rate and momentums."""
        loop = self.fitting.loop
        weights = [a for pair in zip(loop.w, loop.b, strict=True) for a in pair]
        opt = [np.int32(self.fitting.steps), np.float32(loop.lr)]
        if loop.m_flat is not None:
            sizes = np.cumsum([a.size for a in weights])[:-1]
            opt += [m.reshape(a.shape)
                    for m, a in zip(np.split(loop.m_flat, sizes), weights, strict=True)]
        return weights, opt

    @property
    def layer_names(self) -> list[str]:
        """The Dense layers' names, as ``model.build_model`` names them."""
        return [f"dense{i}" for i in range(1, len(self.config.model.hidden) + 1)] + ["output"]

    @property
    def activations(self) -> list[str]:
        """The Dense layers' activations: the hidden ones', then the softmax."""
        return [self.config.model.activation] * len(self.config.model.hidden) + ["softmax"]

    def plan(self) -> list:
        """The Dense layers (``engine.plan.Dense``) holding the arrays: the initial ones until
        training starts, then those training updates."""
        from mnistlab.engine.plan import Dense

        return [Dense(name, kernel, bias, act, None) for name, (kernel, bias, act)
                in zip(self.layer_names, self.layers(), strict=True)]

    def layers(self) -> list[tuple]:
        """``(kernel, bias, activation)`` per Dense layer: the initial arrays until training
        starts, then those training updates."""
        if self.fitting is None:
            pairs = zip(self.arrays[0::2], self.arrays[1::2], strict=True)
        else:
            pairs = zip(self.fitting.loop.w, self.fitting.loop.b, strict=True)
        return [(k, b, act) for (k, b), act in zip(pairs, self.activations, strict=True)]

    def keras_free(self) -> bool:
        """Can the run finish without Keras: the compiled loop trained it (whose forward pass
        gives the test probabilities) and a template of its Keras files fits its arrays?"""
        if self.template is None or self.fitting is None or not self.fitting.steps:
            return False
        if self.fitting.engine.get("path") != "compiled":
            return False
        weights, opt = self.checkpoint_values()
        return self.template.arrays_fit([*weights, *opt])

    def _start(self, needed: bool = False) -> bool:
        """Start the Keras thread unless it has started (or a template makes Keras unneeded,
        unless ``needed``); True if this call started it."""
        if self.template is not None and not needed:
            return False
        if self._thread.ident is None:
            self._thread.start()
            return True
        return False

    def wait(self) -> None:
        """Wait for the Keras thread to finish (whether or not it succeeded), if it started."""
        if self._thread.ident is not None:
            self._thread.join()

    def model(self):
        """The Keras model (waiting for its thread), holding the trained weights if any epoch
        ran. Raises what building it raised."""
        self._start(needed=True)  # if training stopped before it did, or never needed it
        self._thread.join()
        if self._error is not None:
            raise self._error
        model = self._model
        if self.fitting is not None and self.fitting.steps:
            loop = self.fitting.loop
            loop.vars = list(model.trainable_variables)
            loop.optimizer = model.optimizer
            loop.write_back(self.fitting.steps)
        return model


def _yield_to_training(thread: threading.Thread) -> bool:
    """Give ``thread`` (the Keras import) nice 19, on Linux where a thread has its own; True if
    it now has it.

    Only when another process keeps the second core busy (``fit`` asks): the import then no
    longer takes a third of both cores' time from the training thread (beside a busy loop, epochs
    2-4 took 2.3-2.8x the one-thread median, ``bench/busy_core.py``) but runs when the training
    waits for it, after the last epoch. The threads it starts (XLA's) inherit the value: beside
    the busy loop the finish took 0.28-0.32 s against 0.23-0.29 s (three pairs), the whole runs
    12.6-12.8 s against 12.3-12.9 s. Not on an idle machine: there nice 19 made whole runs ~0.15 s
    slower (medians of 8 alternating pairs, 7.51 against 7.35 s; noisy).
    """
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, thread.native_id, 19)
    except (AttributeError, OSError):  # no per-thread priority here: the import as it was
        return False
    return True
