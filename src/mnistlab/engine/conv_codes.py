"""The layer kinds and activations of the conv engine's plan arrays, shared by ``conv_kernels``
(numba) and ``conv_arrays`` (a saved plan, read without numba)."""

# KIND values
CONV, POOL, DENSE = 0, 1, 2
# ACT values
LINEAR, RELU, SOFTMAX = 0, 1, 2
