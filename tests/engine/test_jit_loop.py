"""The compiled plain-SGD loop: the same training as Keras fit and as the numpy loop, bit-identical
on one or two threads, resumable, and really the one fit_fast uses."""

import keras
import numpy as np
import pytest

from mnistlab.engine import fit_fast, jit_loop, kernels
from mnistlab.engine.blas import available_cores
from mnistlab.engine.plan import training_plan


@pytest.fixture(scope="module")
def data():
    """1,000 random 28x28 'images' with a learnable label (784 inputs, as in MNIST)."""
    rng = np.random.default_rng(8)
    x = rng.random((1000, 28, 28), dtype=np.float32)
    y = (x[:, :14].mean((1, 2)) * 10 % 10).astype(np.int64)
    return x[:700], y[:700], x[700:], y[700:]


def mlp(seed=3, activation="relu", use_bias=True, dropout=0.0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((28, 28)), keras.layers.Flatten()]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers += [
        keras.layers.Dense(48, activation=activation, use_bias=use_bias),
        keras.layers.Dense(24, activation=activation),
        keras.layers.Dense(10, activation="softmax"),
    ]
    return keras.Sequential(layers)


def run(data, optimizer, *, path="compiled", threads=None, model=None, epochs=2, batch_size=64,
        **kw):
    x, y, xv, yv = data
    model = model or mlp()
    hist = fit_fast(model, x, y, xv, yv, epochs=epochs, batch_size=batch_size, seed=2,
                    optimizer=optimizer, path=path, threads=threads, **kw)
    assert hist.engine["path"] == path or path == "auto"
    return model, hist


def test_fit_fast_trains_plain_sgd_with_the_compiled_loop(data, monkeypatch):
    _, hist = run(data, keras.optimizers.SGD(0.05), epochs=1, path="auto")
    assert hist.engine["path"] == "compiled" and hist.engine["threads"] is None
    _, hist = run(data, keras.optimizers.SGD(0.05), epochs=1, model=mlp(dropout=0.2), path="auto")
    assert hist.engine["path"] == "numpy"  # dropout: the numpy loop draws the masks
    plan = training_plan(mlp())
    assert jit_loop.available(plan) and not jit_loop.available(training_plan(mlp(dropout=0.2)))
    # no second compiled thread (no OpenMP): the numpy loop's two BLAS threads are faster
    monkeypatch.setattr(kernels, "parallel_threads", lambda: 1)
    assert not jit_loop.available(plan) and jit_loop.available(plan, 1)
    _, hist = run(data, keras.optimizers.SGD(0.05), epochs=1, path="auto")
    assert hist.engine["path"] == ("compiled" if available_cores() < 2 else "numpy")


def test_the_compiled_path_refuses_what_it_cannot_train(data):
    from mnistlab.errors import TrainingError

    with pytest.raises(TrainingError, match="Dropout"):
        run(data, keras.optimizers.SGD(0.05), epochs=1, model=mlp(dropout=0.2))
    with pytest.raises(TrainingError, match="Adam"):
        run(data, keras.optimizers.Adam(), epochs=1)
    with pytest.raises(TrainingError, match="path must be one of"):
        run(data, keras.optimizers.SGD(0.05), epochs=1, path="fastest")
    with pytest.raises(TrainingError, match="threads must be"):
        run(data, keras.optimizers.SGD(0.05), epochs=1, threads=3)


def test_fit_fast_reports_the_threads_each_epoch_ran_on(data):
    for threads in (1, 2):
        _, hist = run(data, keras.optimizers.SGD(0.05), threads=threads, epochs=3)
        two = threads == 2 and kernels.parallel_threads() > 1 and available_cores() > 1
        assert hist.engine == {"path": "compiled", "threads": threads,
                               "threads_used": [2 if two else 1] * 3,
                               "numerics": kernels.NUMERICS}


@pytest.mark.parametrize(
    "momentum,nesterov,activation,use_bias",
    [
        (0.0, False, "relu", True),
        (0.9, False, "tanh", False),
        (0.9, True, "sigmoid", True),
        (0.5, False, "linear", True),
    ],
)
def test_matches_keras_fit_when_not_shuffled(data, momentum, nesterov, activation, use_bias):
    x, y, xv, yv = data
    ref = mlp(activation=activation, use_bias=use_bias)
    ref.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=momentum, nesterov=nesterov),
        loss="categorical_crossentropy", metrics=["accuracy"],
    )
    expected = ref.fit(x, np.eye(10)[y], validation_data=(xv, np.eye(10)[yv]), batch_size=48,
                       epochs=3, shuffle=False, verbose=0).history
    model, got = run(data, keras.optimizers.SGD(0.05, momentum=momentum, nesterov=nesterov),
                     model=mlp(activation=activation, use_bias=use_bias), epochs=3,
                     batch_size=48, shuffle=False)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(got[key], expected[key], rtol=5e-5, atol=1e-6, err_msg=key)
    for a, b in zip(model.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-6)


@pytest.mark.parametrize("batch_size", [64, 699])  # 699: the last batch has one row
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_one_or_two_threads_give_the_same_bits(data, momentum, batch_size):
    runs = [
        run(data, keras.optimizers.SGD(0.05, momentum=momentum), threads=t, batch_size=batch_size)
        for t in (1, 2, None)
    ]
    (m1, h1), (m2, h2), (mm, hm) = runs
    if available_cores() > 1:  # two threads really ran (OpenMP is there)
        assert kernels.parallel_threads() == 2
    assert h1 == h2 == hm
    for a, b, c in zip(m1.get_weights(), m2.get_weights(), mm.get_weights(), strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    if batch_size == 64:
        assert h1["loss"][1] < h1["loss"][0]  # and it learns


def test_resume_equals_an_uninterrupted_run(data):
    make = lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True)  # noqa: E731
    whole, h_whole = run(data, make(), epochs=4)
    first_opt = make()
    first, h1 = run(data, first_opt, epochs=2)
    state = [keras.ops.convert_to_numpy(v) for v in first_opt.variables]
    resumed, opt = mlp(seed=50), make()
    resumed.set_weights(first.get_weights())
    opt.build(resumed.trainable_variables)
    for v, value in zip(opt.variables, state, strict=True):
        v.assign(value)
    _, h2 = run(data, opt, epochs=4, initial_epoch=2, model=resumed)
    assert h1["loss"] + h2["loss"] == h_whole["loss"]
    for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
        assert np.array_equal(a, b)


def test_split_row_gives_the_first_thread_a_little_more_than_half():
    cut = jit_loop.split_row(784, [100, 64, 32, 10])
    assert cut % 16 == 0 and 392 < cut < 480
    assert jit_loop.split_row(4, [3, 2]) in range(0, 5)


@pytest.mark.parametrize("rows", [1500, 1024, 7])  # split inside, at the end, nothing to split
def test_validation_on_two_threads_gives_the_bits_of_one(rows):
    rng = np.random.default_rng(5)
    model = mlp()
    plan = training_plan(model)
    sgd = keras.optimizers.SGD(0.05)
    loop = jit_loop.JitLoop(plan, sgd, 64, 784, 100, compile_now=True)
    x = rng.random((rows, 784), dtype=np.float32)
    loop.two = False
    one = loop.predict(x)
    loop.two = True
    two = loop.predict(x)  # kernels.forward_two, on numba's threads
    helper = loop.forward(x, 1.0, True)  # the forward pass' helper thread
    assert one.shape == (rows, 10) and np.isfinite(one).all()
    assert np.array_equal(one, two) and np.array_equal(one, helper)
    expected = model.predict(x.reshape(-1, 28, 28), verbose=0)
    np.testing.assert_allclose(two, expected, rtol=1e-4, atol=1e-6)


def test_validation_waits_for_its_parallel_kernel_to_be_cached(monkeypatch):
    """Leaving the replica, the loop validates through the forward pass' helper thread until the
    background compiler has cached ``kernels.forward_two`` (it compiles it last), then on numba's
    threads: the same bits, and no compiling in the run's foreground meanwhile."""
    from mnistlab.engine import kernels

    model = mlp()
    loop = jit_loop.JitLoop(training_plan(model), keras.optimizers.SGD(0.05), 64, 784, 100)
    if not loop.two:
        pytest.skip("needs two compiled threads (OpenMP and two cores)")
    x = np.random.default_rng(6).random((1000, 784), dtype=np.float32)
    expected = loop.predict(x)
    called = []
    monkeypatch.setattr(loop.jk, "forward_two", lambda *a: called.append(a))
    loop.fwd_two = False
    monkeypatch.setattr(kernels, "compiled_before", lambda *names, stage="complete": False)
    assert np.array_equal(loop.predict(x), expected) and not called and not loop.fwd_two
    monkeypatch.undo()
    assert np.array_equal(loop.predict(x), expected) and loop.fwd_two
