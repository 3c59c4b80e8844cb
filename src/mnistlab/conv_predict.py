"""A convnet's forward pass for ``Predictor``: mnistlab's conv engine where it can run the model,
else Keras.

The engine (``engine.conv_loop.conv_forward``: the numba kernels training uses, two worker
threads, chunks of 8 images) is used when numba is here, its kernels are already compiled on
this machine (nobody waits ~2.5 minutes for a prediction) and it reads every layer of the model;
it is checked against the model on a few images first. Measured side by side
(``bench/predictor_speed.py --model cnn``, keras-io convnet, 10,000 uint8 images): 52,800 against
48,400 images/s for Keras/JAX's compiled predict, one image 0.10 against 0.17 ms. Anything else
goes through Keras (``KerasNetwork``).

An ``EngineNetwork`` is saved as arrays (``to_arrays``: the plan, ``engine.conv_arrays``), so a
convnet run has a ``predictor.npz`` like an MLP run and ``mnistlab predict`` needs no Keras;
``from_arrays`` raises ``EngineNotReady`` where the kernels are not compiled
(``Predictor.from_run`` then loads the Keras model instead).
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

from mnistlab.errors import ModelError

log = logging.getLogger(__name__)
CHECK_RTOL, CHECK_ATOL = 1e-4, 1e-5  # as ``inference.VERIFY_*``: float32 rounding only


class EngineNotReady(ModelError):
    """A saved convnet predictor needs the conv engine's kernels, not compiled on this machine."""


def conv_network(model, input_shape: tuple, side: int):
    """The conv engine's forward pass of ``model`` when it can run it here, else Keras'."""
    engine = _engine_network(model, side)
    if engine is not None and _agrees(engine, model, input_shape):
        return engine
    return KerasNetwork(model, input_shape, side)


def _engine_network(model, side: int):
    try:
        from mnistlab.engine import conv_kernels
        from mnistlab.engine.conv_plan import read_plan

        if not conv_kernels.compiled_before():
            return None
        return EngineNetwork(read_plan(model), side)
    except (ImportError, ModelError) as e:  # no numba / OpenBLAS, or a layer it does not read
        log.debug("convnet predicted through Keras: %s", e)
        return None


def _agrees(network, model, input_shape) -> bool:
    x = np.random.default_rng(0).random((8, *input_shape[1:]), dtype=np.float32)
    try:
        want = np.asarray(model(x, training=False), dtype=np.float32)
    except Exception:  # noqa: BLE001 - Predictor._verify reports it, on the Keras path
        return False
    got = network.predict(x.reshape(len(x), -1), from_255=False)
    if got.shape == want.shape and np.allclose(got, want, CHECK_RTOL, CHECK_ATOL):
        return True
    log.warning("mnistlab: the conv engine disagrees with this Keras model (max abs difference "
                "%s); predicting through Keras", float(np.abs(got - want).max())
                if got.shape == want.shape else "n/a")
    return False


class EngineNetwork:
    """A convnet's forward pass in the conv engine, with ``engine.forward.Network``'s interface:
    rows ``(N, S*S)`` in, probabilities out. The weights are copied when it is made. Calls run
    under a lock (the engine sets numpy's BLAS thread count process-wide while it works)."""

    compiled = True

    def __init__(self, plan, side: int):
        self.plan = plan
        self.input_dim, self.output_dim = side * side, plan.classes
        self._lock = threading.Lock()

    def predict(self, x: np.ndarray, from_255: bool) -> np.ndarray:
        from mnistlab.engine.conv_loop import conv_forward

        if x.dtype != np.uint8 or not from_255:  # uint8 0-255: the engine scales it itself
            x = (np.multiply(x, np.float32(1.0 / 255.0), dtype=np.float32) if from_255
                 else x.astype(np.float32, copy=False))
        with self._lock:
            return conv_forward(self.plan, x)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The plan as plain arrays (``engine.conv_arrays``) plus ``input_dim``."""
        from mnistlab.engine.conv_arrays import plan_to_arrays

        return {**plan_to_arrays(self.plan), "input_dim": np.array(self.input_dim, np.int64)}

    @classmethod
    def from_arrays(cls, arrays) -> EngineNetwork:
        """The network ``to_arrays`` wrote.

        Raises:
            EngineNotReady: numba is missing or the conv kernels are not compiled here (a
                prediction would wait ~2.5 minutes for the compiler).
            ModelError: a malformed plan.
        """
        from mnistlab.engine.conv_arrays import plan_from_arrays

        plan = plan_from_arrays(arrays)
        side = math.isqrt(math.prod(plan.input_shape))
        if side * side != math.prod(plan.input_shape) or "input_dim" not in arrays \
                or int(arrays["input_dim"]) != side * side:
            raise ModelError("the saved convnet's input is not a square image's S*S")
        try:
            from mnistlab.engine import conv_kernels

            ready = conv_kernels.compiled_before()
        except ImportError as e:
            raise EngineNotReady(f"the saved convnet needs the conv engine: {e}") from None
        if not ready:
            raise EngineNotReady(
                "the saved convnet runs in the conv engine, whose kernels are not compiled on "
                "this machine yet; run `python -m mnistlab.engine.warm` once (~2.5 minutes), or "
                "predict from the Keras model (--model RUN/model.keras)")
        return cls(plan, side)


class KerasNetwork:
    """A convnet's forward pass through Keras itself (the numpy plan reads Dense chains only).

    Same interface as ``engine.forward.Network``: rows ``(N, S*S)`` in, probabilities out. Calls
    run under a lock, in chunks of up to 1,024 rows through Keras' compiled predict function
    (``predict_on_batch``; calling the model eagerly was 8x slower, measured), each chunk padded
    with zero rows to a power of two so the backend compiles at most 11 batch shapes, not one per
    request size; the pixels are scaled as in training (``mnistlab.model.to_input``).
    """

    compiled = False
    _CHUNK = 1024

    def __init__(self, model, input_shape: tuple, side: int):
        self.model, self._shape = model, tuple(input_shape[1:])
        self.input_dim, self.output_dim = side * side, int(model.output_shape[-1])
        self._lock = threading.Lock()

    def predict(self, x: np.ndarray, from_255: bool) -> np.ndarray:
        x = np.multiply(x, np.float32(1.0 / 255.0), dtype=np.float32) if from_255 else x.astype(
            np.float32)
        x = x.reshape(len(x), *self._shape)
        with self._lock:
            parts = [self._chunk(x[i:i + self._CHUNK]) for i in range(0, len(x), self._CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, self.output_dim), np.float32)

    def _chunk(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        size = 1 << (n - 1).bit_length()  # the next power of two
        if size != n:
            x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), np.float32)])
        return np.asarray(self.model.predict_on_batch(x), np.float32)[:n]

    def to_arrays(self):
        raise ModelError("a convnet is predicted through Keras: it has no numpy predictor file")
