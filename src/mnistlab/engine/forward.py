"""A layer plan's forward pass: numpy for small batches, compiled code on two threads for big ones.

``Network`` holds a prediction plan (``engine.plan``) as read-only float32 arrays and runs it in
numpy, in blocks of ``CHUNK_NUMPY`` rows through buffers allocated per call, so it is thread-safe;
it supports more activations (gelu, selu, ...) and steps (BatchNormalization, Activation layers)
than the compiled code. From ``COMPILED_ROWS`` rows a plain Dense chain runs in
``CompiledForward`` instead.

``CompiledForward`` is also ``fit_fast``'s per-epoch validation on one thread (on two it is
``kernels.forward_two``, on the training loop's own threads: ``engine.jit_loop``). The rows
are cut into chunks of ``CHUNK``; each chunk's pixels are converted to float32 into a scratch that
stays in cache for the first product, and both halves of the batch (split at a chunk boundary) run at
once, one on the calling thread and one on a helper thread, the BLAS on one thread each.
Measured on 10,000 uint8 Fashion-MNIST images through the tutorial's network (2-vCPU VM):
9.7-10.5 ms, against 12.6-13.6 ms for numpy with two OpenBLAS threads in the same process.

Two Python threads rather than OpenMP: the GIL is released inside, the hand-off costs tens of
microseconds against ~10 ms of work, calls from many threads at once are safe, and a forked
child (a server's worker) starts its own helper.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mnistlab.engine.kernels import ACTIVATIONS as COMPILED_ACTIVATIONS
from mnistlab.engine.plan import (
    Activation,
    Dense,
    Normalize,
    plan_from_arrays,
    plan_to_arrays,
    to_numpy,
)
from mnistlab.errors import ModelError

CHUNK = 512  # rows converted and multiplied at a time (measured best of 128-1024)
CHUNK_NUMPY = 2048  # rows per block in numpy: few BLAS calls, activations stay in cache
COMPILED_ROWS = 1024  # batches from this size run in compiled code on two threads
ACTIVATIONS = (
    "linear", "relu", "relu6", "tanh", "sigmoid", "gelu", "elu", "selu", "silu", "softplus",
    "softsign", "softmax",
)  # fmt: skip  (what ``activate`` computes)
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_BIG_BATCH = threading.Lock()

_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _helper_thread() -> ThreadPoolExecutor:
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(1, thread_name_prefix="mnistlab-forward")
        return _helper


def _forget_helper() -> None:  # in a forked child the helper thread does not exist
    global _helper, _helper_lock
    _helper, _helper_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helper)


class CompiledForward:
    """Probabilities of float32 or uint8 rows through Dense layers ending in a softmax.

    ``w_flat``, ``layout`` and ``acts`` as in ``engine.kernels`` (the flat buffer is used
    as it is, not copied: a training loop's updates show).
    """

    def __init__(self, w_flat: np.ndarray, layout: np.ndarray, acts: np.ndarray):
        from mnistlab.engine import kernels

        self._kernel = kernels.load().forward_rows  # ImportError without numba or OpenBLAS
        self.w_flat, self.layout, self.acts = w_flat, layout, acts

    @classmethod
    def from_layers(cls, layers) -> CompiledForward:
        """From ``(kernel (in, out), bias (out,) or None, activation name)`` per Dense layer, the
        last one a softmax. Raises KeyError for an activation the compiled code lacks, and
        ImportError without numba or numpy's OpenBLAS."""
        return cls(*flat_layers(layers))

    def __call__(self, x: np.ndarray, scale: float, two: bool) -> np.ndarray:
        """Probabilities ``(N, C)`` of C-contiguous rows ``x`` (float32 or uint8), each value
        times ``scale`` first. ``two``: run the second half on the helper thread. The BLAS must
        be on one thread (``fit_fast`` sees to that; ``Predictor`` sets it)."""
        out = np.empty((len(x), self.layout[-1, 2]), np.float32)
        args = (np.float32(scale), self.w_flat, self.layout, self.acts, CHUNK)
        half = -(-len(x) // 2 // CHUNK) * CHUNK if two else len(x)
        if 0 < half < len(x):
            rest = _helper_thread().submit(self._kernel, x[half:], *args, out[half:])
            self._kernel(x[:half], *args, out[:half])
            rest.result()
        elif len(x):
            self._kernel(x, *args, out)
        return out


def flat_layers(layers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(w_flat, layout, acts)`` as ``engine.kernels`` takes them, from ``(kernel, bias or None,
    activation name)`` per Dense layer (the last a softmax). Raises KeyError for an activation
    the compiled code lacks."""
    parts, rows, off = [], [], 0
    for kernel, bias, _ in layers:
        rows.append([off, *kernel.shape, -1 if bias is None else off + kernel.size])
        parts.append(np.asarray(kernel, np.float32).ravel())
        off += kernel.size
        if bias is not None:
            parts.append(np.asarray(bias, np.float32))
            off += bias.size
    acts = [COMPILED_ACTIVATIONS[a] for _, _, a in layers[:-1]] + [0]
    return np.concatenate(parts), np.array(rows, np.int64), np.array(acts, np.int64)


def loop_probabilities(layers, x: np.ndarray) -> np.ndarray:
    """Probabilities float32 ``(N, C)`` of float32 rows ``x`` (``to_input``'s [0, 1]) computed as
    the compiled training loop's validation computes them: ``kernels.forward_rows`` when numba's
    cache has the loop's kernels, else their numpy replica (``engine.replica``), which gives the
    same bits; on two threads or one, the same bits too. The test metrics of a run the compiled
    loop trained come from here, at training and in ``mnistlab evaluate``: the same figures
    whichever process computes them, with Keras loaded or not.

    Args:
        layers: ``(kernel, bias or None, activation name)`` per Dense layer, the last a softmax.
        x: ``(N, D)`` float32 rows.

    Raises:
        ImportError: no numba or no OpenBLAS ``cblas_sgemm`` here.
        KeyError: an activation the compiled code lacks.
    """
    from mnistlab.engine import kernels, replica
    from mnistlab.engine.blas import available_cores

    w_flat, layout, acts = flat_layers(layers)
    x = np.ascontiguousarray(x, np.float32)
    blas = _blas()
    if kernels.compiled_before(stage="loop") or blas._sgemm is None or not replica.exact(acts[:-1]):
        forward = CompiledForward(w_flat, layout, acts)  # compiles here if need be
        with _BIG_BATCH, blas.single():
            return forward(x, 1.0, two=available_cores() > 1)
    out = np.empty((len(x), int(layout[-1, 2])), np.float32)
    with _BIG_BATCH, blas.single():
        replica.Replica(blas._sgemm).forward(x, np.float32(1), w_flat, layout, acts, CHUNK, out)
    return out


class Network:
    """A prediction plan (``engine.plan.prediction_plan``) as read-only float32 arrays.

    Thread-safe: a call only reads the weights and writes buffers it allocated itself.

    Raises (construction):
        ModelError: an activation ``activate`` does not know, or shapes that do not chain.
    """

    def __init__(self, steps, input_dim: int):
        self.steps = tuple(_frozen(s) for s in steps)
        self.input_dim = input_dim
        self.output_dim = _output_dim(self.steps, input_dim)
        first = self.steps[0] if self.steps else None
        # 0-255 input meets the first kernel pre-divided by 255: one pass over the input less.
        self._first_u8 = (
            _readonly(first.kernel / np.float32(255.0)) if isinstance(first, Dense) else None
        )
        dense = [s for s in self.steps if isinstance(s, Dense)]
        plain = len(dense) == len(self.steps) and all(
            s.activation in COMPILED_ACTIVATIONS for s in dense[:-1]
        )
        self.compiled = None if plain else False  # built at the first big batch; False: never

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The network as plain arrays (``engine.plan.plan_to_arrays`` plus ``input_dim``)."""
        return {**plan_to_arrays(self.steps), "input_dim": np.array(self.input_dim, np.int64)}

    @classmethod
    def from_arrays(cls, arrays) -> Network:
        """The network ``to_arrays`` wrote (``arrays``: a mapping such as an NpzFile).

        Raises:
            ModelError: a malformed plan, an unknown activation, shapes that do not chain.
        """
        if "input_dim" not in arrays:
            raise ModelError("the saved network has no input_dim; it is incomplete")
        return cls(plan_from_arrays(arrays), int(arrays["input_dim"]))

    def predict(self, x: np.ndarray, from_255: bool) -> np.ndarray:
        """Probabilities float32 ``(N, C)`` of rows ``x`` ``(N, D)`` (uint8 or floats);
        ``from_255``: the values are 0-255, not 0-1."""
        n = len(x)
        if n == 0:
            return np.zeros((0, self.output_dim), np.float32)
        if n >= COMPILED_ROWS and x.dtype in (np.uint8, np.float32):
            forward = self._compiled_forward()
            if forward is not None:
                from mnistlab.engine.blas import available_cores

                # One big batch at a time: it already uses both cores, and the BLAS thread count
                # it sets is process-wide (two batches toggling it would leave it wrong, and a
                # product's bits depend on it).
                with _BIG_BATCH, _blas().single():
                    return forward(np.ascontiguousarray(x), 1 / 255 if from_255 else 1,
                                   two=available_cores() > 1)
        rows = min(n, CHUNK_NUMPY)
        widths = [s.kernel.shape[1] for s in self.steps if isinstance(s, Dense)]
        buffers = [np.empty((rows, w), np.float32) for w in widths]
        convert = np.empty((rows, x.shape[1]), np.float32) if x.dtype != np.float32 else None
        out = np.empty((n, self.output_dim), np.float32)
        for start in range(0, n, rows):
            block = x[start : start + rows]
            m = len(block)
            if convert is not None:
                np.copyto(convert[:m], block, casting="unsafe")
                block = convert[:m]
            out[start : start + m] = self._layers(block, buffers, m, from_255)
        return out

    def _compiled_forward(self):
        """The compiled forward pass of a plain Dense chain, or None (other steps, or no numba /
        OpenBLAS here)."""
        if self.compiled is None:
            try:
                if not _forward_cached():  # numpy until a background process has compiled it
                    return None
                self.compiled = CompiledForward.from_layers(
                    [(s.kernel, s.bias, s.activation) for s in self.steps]
                )
            except (ImportError, KeyError):
                self.compiled = False
        return self.compiled or None

    def _layers(self, h: np.ndarray, buffers, m: int, from_255: bool) -> np.ndarray:
        # ``h`` may be the caller's array: nothing is written to it until a step has made a
        # new array (``owned``).
        owned = False
        if from_255 and self._first_u8 is None:
            h, owned = h * np.float32(1.0 / 255.0), True
        dense_i = 0
        for step in self.steps:
            if isinstance(step, Dense):
                kernel = self._first_u8 if (dense_i == 0 and from_255) else step.kernel
                nxt = buffers[dense_i][:m]
                dense_i += 1
                np.dot(h, kernel, out=nxt)
                if step.bias is not None:
                    nxt += step.bias
                h, owned = activate(nxt, step.activation), True
            elif isinstance(step, Normalize):
                h, owned = h * step.scale + step.shift, True
            else:
                h, owned = activate(h if owned else h.copy(), step.activation), True
        return h


_warming = None


def _forward_cached() -> bool:
    """Is the compiled forward pass in numba's cache? If not, compile it in the background
    (``engine.warm``) rather than keep a caller waiting ~5 s (and if the cache folder cannot be
    written, stay on numpy). Raises ImportError without numba or numpy's OpenBLAS."""
    global _warming
    from mnistlab.engine import kernels, warm

    # not while a background compilation runs: it may not have reached this kernel's uint8 build
    if kernels.compiled_before("forward_rows") and not warm.compiling():
        return True
    if _warming is None:
        try:
            _warming = warm.start()
        except OSError:  # no cache folder to compile into: numpy it is
            return False
    return _warming.ready()


@functools.cache
def _blas():
    from mnistlab.engine.blas import Threads

    return Threads()


def _readonly(a) -> np.ndarray:
    a = np.array(to_numpy(a) if not isinstance(a, np.ndarray) else a, np.float32, order="C")
    a.flags.writeable = False
    return a


def _frozen(step):
    """A plan step with its weights as read-only float32 arrays; its activation checked."""
    where = f"layer {step.name!r} ({step.kind})"
    if isinstance(step, Normalize):
        return Normalize(step.name, _readonly(step.scale), _readonly(step.shift))
    if step.activation not in ACTIVATIONS:
        name = getattr(step.fn, "__name__", None) if step.activation == "custom" else None
        raise ModelError(
            f"{where} uses activation {name or step.fn or step.activation!r}, which the numpy "
            f"predictor does not know. Supported: {', '.join(ACTIVATIONS)}"
        )
    if isinstance(step, Activation):
        return step
    bias = _readonly(step.bias) if step.bias is not None else None
    return Dense(step.name, _readonly(step.kernel), bias, step.activation, step.fn)


def _output_dim(steps, input_dim: int) -> int:
    dim = input_dim
    for step in steps:
        if isinstance(step, Dense):
            if step.kernel.shape[0] != dim:
                raise ModelError(
                    f"a Dense kernel expects {step.kernel.shape[0]} inputs but receives {dim}"
                )
            dim = step.kernel.shape[1]
        elif isinstance(step, Normalize) and step.scale.shape != (dim,):
            raise ModelError(
                f"a BatchNormalization has {step.scale.shape} features, expected {dim}"
            )
    return dim


# Activations, in place on float32 arrays ---------------------------------------------------


@functools.lru_cache(maxsize=64)
def _zeros(width: int) -> np.ndarray:
    return _readonly(np.zeros(width, np.float32))


def activate(h: np.ndarray, name: str) -> np.ndarray:
    """``activation(h)`` for a float32 array, in place where numpy can (use the result)."""
    if name == "linear":
        return h
    if name == "relu":  # against a zeros row: 3x faster than numpy's scalar path
        return np.maximum(h, _zeros(h.shape[-1]), out=h)
    if name == "relu6":
        return np.clip(h, 0.0, 6.0, out=h)
    if name == "tanh":
        return np.tanh(h, out=h)
    if name == "softmax":
        # On the transposed copy, numpy reduces along long contiguous rows: 3.5x faster for
        # (2048, 10) than reducing each row of 10.
        t = np.ascontiguousarray(h.T)
        t -= t.max(axis=0)
        np.exp(t, out=t)
        t /= t.sum(axis=0)
        h[...] = t.T
        return h
    if name == "softsign":
        return np.divide(h, 1.0 + np.abs(h), out=h)
    if name == "softplus":
        return np.logaddexp(np.float32(0.0), h, out=h)
    return _activate_scipy(h, name)


def _activate_scipy(h: np.ndarray, name: str) -> np.ndarray:
    from scipy import special

    if name == "sigmoid":
        return special.expit(h, out=h)
    if name == "silu":
        return np.multiply(h, special.expit(h), out=h)
    if name == "gelu":
        return np.multiply(
            h, np.float32(0.5) * (1.0 + special.erf(h * np.float32(0.5**0.5))), out=h
        )
    if name == "elu":
        return np.where(h > 0, h, np.expm1(np.minimum(h, 0.0))).astype(np.float32, copy=False)
    if name == "selu":
        neg = np.float32(_SELU_ALPHA) * np.expm1(np.minimum(h, 0.0))
        return (np.float32(_SELU_SCALE) * np.where(h > 0, h, neg)).astype(np.float32, copy=False)
    raise ModelError(f"unknown activation {name!r}")  # unreachable: names are checked on load
