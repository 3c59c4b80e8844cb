"""Keras' seeded initial weights without Keras: the same float32 bits, in numpy.

``mnistlab.model`` gives every Dense layer ``GlorotUniform(seed=s)``. On the JAX backend Keras
turns an int seed into the raw key ``[s, 0]`` and draws ``jax.random.uniform`` from it: the
Threefry-2x32 counter hash (Salmon et al., 2011) of each element's flat index, the two output
words xor-ed (JAX's partitionable bit generator), the top 23 bits made a float in [1, 2), then
scaled to ``[-limit, limit)``. Written out here so that a run can start training before Keras
(1 s of imports) is loaded; ``tests/engine/test_init.py`` checks every bit against Keras.
"""

from __future__ import annotations

import math

import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotl(v: np.ndarray, r: int) -> np.ndarray:
    return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def threefry2x32(key: tuple[int, int], hi: np.ndarray, lo: np.ndarray):
    """Threefry-2x32 with 20 rounds of the counters ``(hi, lo)`` (uint32 arrays) under ``key``."""
    with np.errstate(over="ignore"):
        k0, k1 = np.uint32(key[0]), np.uint32(key[1])
        ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
        x0, x1 = hi + ks[0], lo + ks[1]
        for i in range(5):
            for r in _ROTATIONS[i % 2]:
                x0 = x0 + x1
                x1 = _rotl(x1, r) ^ x0
            x0 = x0 + ks[(i + 1) % 3]
            x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def uniform(seed: int, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    """``keras.random.uniform(shape, low, high, seed=seed)`` on JAX: float32 ``shape``."""
    index = np.arange(math.prod(shape), dtype=np.uint64)
    hi, lo = (index >> np.uint64(32)).astype(np.uint32), index.astype(np.uint32)
    b0, b1 = threefry2x32((seed, 0), hi, lo)
    bits = ((b0 ^ b1) >> np.uint32(9)) | np.float32(1.0).view(np.uint32)
    floats = bits.view(np.float32) - np.float32(1.0)
    low32, high32 = np.float32(low), np.float32(high)
    # XLA fuses the scaling into one fused multiply-add: the float32 product is exact in float64,
    # the sum rounds twice (to float64, then float32), which could differ from one rounding in
    # about one value in 2**29; none did in the millions the tests compare.
    scaled = (floats.astype(np.float64) * np.float64(high32 - low32) + np.float64(low32))
    return np.maximum(low32, scaled.astype(np.float32)).reshape(shape)


def glorot_uniform(seed: int, fan_in: int, fan_out: int) -> np.ndarray:
    """``keras.initializers.GlorotUniform(seed)`` of a Dense kernel ``(fan_in, fan_out)``."""
    limit = math.sqrt(3.0 * (1.0 / max(1.0, (fan_in + fan_out) / 2.0)))
    return uniform(seed, (fan_in, fan_out), -limit, limit)


def mlp_weights(hidden: list[int], n_in: int, num_classes: int, seed: int) -> list[np.ndarray]:
    """The initial kernels and biases of ``mnistlab.model``'s MLP, in ``model.variables`` order:
    ``dense1`` ... ``dense<k>`` (seeds ``seed + i``), then ``output`` (seed ``seed``)."""
    widths = [n_in, *hidden, num_classes]
    seeds = [seed + i for i in range(1, len(hidden) + 1)] + [seed]
    out = []
    for s, a, b in zip(seeds, widths, widths[1:], strict=False):
        out += [glorot_uniform(s, a, b), np.zeros(b, np.float32)]
    return out
