"""The plain-SGD loops' speed devices: none of them may change a single bit of the result."""

import os

import keras
import numpy as np
import pytest

from mnistlab.engine import fit_fast
from mnistlab.engine.blas import Threads, available_cores
from mnistlab.engine.numpy_loop import FirstLayer


@pytest.fixture(scope="module")
def images():
    """1,200 random 28x28 'images' with a learnable label: MNIST-sized, so the first layer has 784
    inputs and OpenBLAS really uses its second thread."""
    rng = np.random.default_rng(3)
    x = rng.random((1200, 28, 28), dtype=np.float32)
    y = (x[:, :14].mean((1, 2)) * 10 % 10).astype(np.int64)
    return x[:1000], y[:1000], x[1000:], y[1000:]


def tutorial_mlp(seed=2):
    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 10 + i)  # noqa: E731
    return keras.Sequential(
        [keras.Input((28, 28)), keras.layers.Flatten()]
        + [
            keras.layers.Dense(w, activation=a, kernel_initializer=init(i))
            for i, (w, a) in enumerate([(100, "relu"), (64, "relu"), (32, "relu"), (10, "softmax")])
        ]
    )


def train(images, threads, momentum=0.0, epochs=2, jit=False):
    x, y, xv, yv = images
    model = tutorial_mlp()
    hist = fit_fast(
        model, x, y, xv, yv, epochs=epochs, batch_size=96, seed=4,
        optimizer=keras.optimizers.SGD(0.05, momentum=momentum),
        path="compiled" if jit else "numpy", threads=threads,
    )
    return model.get_weights(), hist


@pytest.mark.parametrize("jit", [False, True], ids=["numpy", "jit"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_one_or_two_threads_give_the_same_bits(images, momentum, jit):
    w1, h1 = train(images, 1, momentum, jit=jit)
    w2, h2 = train(images, 2, momentum, jit=jit)
    wm, hm = train(images, None, momentum, jit=jit)  # measured per epoch, may switch mid-run
    assert h1 == h2 == hm
    for a, b, c in zip(w1, w2, wm, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert h1["loss"][1] < h1["loss"][0]  # and it learns


def test_the_probe_uses_two_threads_only_where_they_give_the_same_bits():
    class SloppyThreads(Threads):
        """A BLAS whose 'two-thread' products round differently, as another build might."""

        def __init__(self):
            super().__init__()
            self.n, self.most = 1, 2

        @property
        def usable(self):
            return True

        def set(self, n):
            self.n = n

        def sub_product(self, a, b, c):
            c -= a.T @ b + (self.n > 1) * np.float32(1e-3)

    rng = np.random.default_rng(0)
    kernel = rng.random((784, 100), dtype=np.float32)
    layer = FirstLayer(kernel, SloppyThreads(), {128, 16})
    assert layer.fast_update == set()
    # numpy's own products do not go through the stub: whatever the real BLAS does, the
    # forward pass must equal the canonical two-halves sum for every row count it accepts
    a = rng.random((128, 784), dtype=np.float32)
    out, ref = np.empty((128, 100), np.float32), np.empty((128, 100), np.float32)
    layer.forward(a, out, two=True)
    layer.forward(a, ref, two=False)
    assert np.array_equal(out, ref)


@pytest.mark.parametrize("k,m,n", [(128, 784, 100), (16, 784, 100), (7, 5, 3)])
def test_sub_product_is_c_minus_a_transposed_b(k, m, n):
    rng = np.random.default_rng(k)
    a = rng.random((k, m), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = rng.random((m, n), dtype=np.float32)
    expected = c - a.T @ b
    Threads().sub_product(a, b, c)
    assert np.array_equal(c, expected)
    strided = rng.random((m, 2 * n), dtype=np.float32)[:, ::2]  # not contiguous: numpy fallback
    expected = strided - a.T @ b
    Threads().sub_product(a, b, strided)
    assert np.array_equal(strided, expected)


def test_pinned_gives_the_thread_its_cpu_mask_back():
    before = os.sched_getaffinity(0)
    with Threads().pinned():
        inside = os.sched_getaffinity(0)
    assert os.sched_getaffinity(0) == before
    assert len(inside) == (1 if Threads().usable else len(before))
    assert inside <= before


@pytest.mark.parametrize("optimizer", ["sgd", "sgd-numpy", "adam"])
def test_uint8_pixels_train_exactly_like_their_scaled_floats(optimizer):
    """fit_fast scales uint8 batches itself; the weights must not differ by one bit."""
    from mnistlab.model import to_input

    rng = np.random.default_rng(5)
    x8 = rng.integers(0, 256, (700, 28, 28), dtype=np.uint8)
    y = (x8[:, :, :14].mean((1, 2)) > 127.5).astype(np.int64) + 2 * (x8[:, 0, 0] > 127)
    path = {"sgd": "compiled", "sgd-numpy": "numpy", "adam": "scan"}[optimizer]
    make = {"adam": lambda: keras.optimizers.Adam()}
    make["sgd"] = make["sgd-numpy"] = lambda: keras.optimizers.SGD(0.05)
    runs = []
    for x in (x8, to_input(x8)):
        model = tutorial_mlp()
        hist = fit_fast(
            model, x[:500], y[:500], x[500:], y[500:], epochs=2, batch_size=64, seed=1,
            optimizer=make[optimizer](), path=path,
        )
        assert hist.engine["path"] == path
        runs.append((model.get_weights(), hist))
    (w8, h8), (wf, hf) = runs
    assert h8 == hf
    assert all(np.array_equal(a, b) for a, b in zip(w8, wf, strict=True))


def test_a_blas_limit_already_in_force_is_respected_and_kept(images):
    from threadpoolctl import threadpool_info, threadpool_limits

    def counts():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = counts()
    train(images, None, epochs=1)
    assert counts() == before  # fit_fast gives the caller's thread counts back
    with threadpool_limits(1, user_api="blas"):
        assert not Threads().usable
        train(images, None, epochs=1)
        assert counts() == [1] * len(before)
    if available_cores() > 1:
        assert Threads().usable  # numpy's OpenBLAS, pthreads build, on this machine


def test_thread_setting_follows_whole_epoch_rates_and_looks_again_later():
    from threadpoolctl import threadpool_limits

    from mnistlab.engine.numpy_loop import NumpyLoop
    from mnistlab.engine.plan import training_plan

    model = tutorial_mlp()
    opt = keras.optimizers.SGD(0.01)
    opt.build(model.trainable_variables)
    # The loop's probe leaves OpenBLAS on one thread for the caller's limit to undo (fit_fast's):
    # undo it here too, or every later loop in this process sees one thread.
    with threadpool_limits(limits=None, user_api="blas"):
        loop = NumpyLoop(training_plan(model), opt, 32, 784, 100, 0)
    if not loop.threads.usable:
        pytest.skip("one core or no pthreads OpenBLAS: nothing to choose")
    picks = []

    def epoch(one_thread_rate, two_thread_rate):
        two = loop._choose()
        loop._record(two, two_thread_rate if two else one_thread_rate)
        picks.append(two)

    for _ in range(12):  # a busy machine: one thread is faster
        epoch(1.0, 1.5)
    assert picks[:2] == [True, False]  # each setting once, two threads first
    assert picks[2:10] == [False] * 8 and picks[10] is True  # tried again after 8 epochs
    assert picks[11] is False
    picks.clear()
    for _ in range(20):  # the machine frees up: two threads win from the next try on
        epoch(1.0, 0.6)
    assert picks[-1] is True and picks[-5:] == [True] * 5
