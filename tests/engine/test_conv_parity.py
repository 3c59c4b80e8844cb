"""The conv engine against Keras' own fit/predict, resuming, seeded dropout, refused layers."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("numba")

from mnistlab.engine.conv_loop import conv_forward, fit_conv  # noqa: E402
from mnistlab.errors import ModelError  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    """320 of sklearn's 8x8 digits, tripled to 24x24 and padded to 28x28: uint8, int labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    big = np.kron(d.images[:320], np.ones((3, 3)))
    x = np.pad(big, ((0, 0), (2, 2), (2, 2)))
    x = np.round(x * (255 / 16)).astype(np.uint8)
    return x, d.target[:320].astype(np.int64)


def convnet(dropout=0.5, padding="valid", seed=0):
    """keras-io's mnist_convnet (optionally with 'same' padding), built seeded."""
    keras.utils.set_random_seed(seed)
    layers = [
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu", padding=padding),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu", padding=padding),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
    ]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(10, activation="softmax"))
    return keras.Sequential(layers)


def twin(model):
    """A second model with the same architecture and weights."""
    other = keras.models.clone_model(model)
    other.set_weights(model.get_weights())
    return other


def scaled(x):
    from mnistlab.model import to_input

    return to_input(x)[..., None]


@pytest.mark.parametrize(
    ("make_opt", "rtol_loss", "atol_w"),
    [
        (lambda: keras.optimizers.SGD(0.05, momentum=0.9), 1e-6, 3e-7),
        (lambda: keras.optimizers.Adam(1e-3), 1e-6, 4e-6),
        # the rate decays to a tenth within the epoch's 5 steps, evaluated at each step
        (lambda: keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=4, alpha=0.1)), 1e-6, 4e-6),
        (lambda: keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.1, decay_steps=6), momentum=0.9), 1e-6,
         3e-7),
    ],
    ids=["sgd-momentum", "adam", "adam-cosine", "sgd-cosine"],
)
def test_one_epoch_matches_model_fit(digits, make_opt, rtol_loss, atol_w):
    # measured: loss within 1e-7 (relative), weights within 3e-8 (SGD) / 4e-7 (Adam) after
    # 5 steps that moved them by up to 2e-2 / 5e-3; the bounds leave a 10x margin
    x, y = digits
    ref = convnet(dropout=0)
    ours = twin(ref)
    ref.compile(optimizer=make_opt(), loss="categorical_crossentropy", metrics=["accuracy"])
    h_ref = ref.fit(scaled(x), keras.utils.to_categorical(y, 10), batch_size=64, epochs=1,
                    shuffle=False, verbose=0).history
    opt = make_opt()
    h = fit_conv(ours, x, y, None, None, epochs=1, batch_size=64, seed=0, shuffle=False,
                 optimizer=opt)
    assert h["loss"][0] == pytest.approx(h_ref["loss"][0], rel=rtol_loss)
    assert h["accuracy"][0] == pytest.approx(h_ref["accuracy"][0], abs=1 / len(x))
    moved = max(np.abs(a - b).max() for a, b in zip(ref.get_weights(), ours.get_weights(),
                                                    strict=True))
    assert moved < atol_w
    assert int(opt.iterations) == 5  # 320 / 64 steps, written back


def test_last_partial_batch_and_validation_match_keras(digits):
    x, y = digits
    ref = convnet(dropout=0)
    ours = twin(ref)
    ref.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy",
                metrics=["accuracy"])
    xv, yv = x[:50], y[:50]
    h_ref = ref.fit(scaled(x[50:]), keras.utils.to_categorical(y[50:], 10), batch_size=100,
                    epochs=1, shuffle=False, verbose=0,
                    validation_data=(scaled(xv), keras.utils.to_categorical(yv, 10))).history
    h = fit_conv(ours, x[50:], y[50:], xv, yv, epochs=1, batch_size=100, seed=0, shuffle=False,
                 optimizer=keras.optimizers.SGD(0.1))
    for key in ("loss", "val_loss"):
        assert h[key][0] == pytest.approx(h_ref[key][0], rel=1e-5), key
    assert h["val_accuracy"][0] == pytest.approx(h_ref["val_accuracy"][0], abs=1 / 50)


def test_label_smoothing_matches_keras(digits):
    # SGD, whose steps are linear in the gradient (Adam's normalised steps magnify last-bit
    # differences of near-zero gradients into ~1e-5 after 8 steps, smoothing or not). Measured:
    # losses within 6e-8 (relative); weights within 2e-8 after one epoch, 1.0e-6 after two (of
    # 0.026 moved; without smoothing 1.5e-8), where the second epoch's clip (1e-7) starts to
    # act on some classes and a probability on its edge may round to either side
    x, y = digits
    ref = convnet(dropout=0)
    ours = twin(ref)
    for m in (ref, ours):
        m.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"],
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.2))
    xv, yv = x[:64], y[:64]
    h_ref = ref.fit(scaled(x[64:]), keras.utils.to_categorical(y[64:], 10), batch_size=64,
                    epochs=2, shuffle=False, verbose=0,
                    validation_data=(scaled(xv), keras.utils.to_categorical(yv, 10))).history
    h = fit_conv(ours, x[64:], y[64:], xv, yv, epochs=2, batch_size=64, seed=0, shuffle=False)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(h[key], h_ref[key], rtol=1e-5, err_msg=key)
    moved = max(np.abs(a - b).max() for a, b in zip(ref.get_weights(), ours.get_weights(),
                                                    strict=True))
    assert moved < 5e-6


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_clipped_classes_lose_their_gradient_as_under_autodiff(smoothing):
    """The loss gradient with respect to the softmax's inputs, against Keras' own (autodiff of
    the clipped log) on rows where some classes sit under the 1e-7 clip, the label's among them."""
    from mnistlab.engine import conv_kernels as K
    from mnistlab.engine.conv_loop import cross_entropy

    logits = np.array([[30.0, 0.0, -5.0, 2.0], [0.0, 40.0, 1.0, -1.0], [1.0, 2.0, 3.0, 0.5]],
                      np.float32)
    labels = np.array([0, 2, 1])  # row 2: the label's class is clipped
    target = np.array([1 - smoothing, smoothing / 4], np.float32)
    p = np.asarray(keras.ops.softmax(logits), np.float32)
    dz = np.empty_like(p)
    loss, correct = K._loss_grad(p.copy(), labels, np.arange(3), 0, np.float32(1 / 3), target, dz)

    z = keras.Variable(logits)
    onehot = keras.utils.to_categorical(labels, 4)
    lossfn = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    if keras.backend.backend() == "jax":
        import jax

        want = np.asarray(jax.grad(lambda v: lossfn(onehot, jax.nn.softmax(v)))(logits))
        value = float(lossfn(onehot, p))
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            out = lossfn(onehot, tf.nn.softmax(z.value))
        want, value = tape.gradient(out, z.value).numpy(), float(out)
    np.testing.assert_allclose(dz, want, rtol=1e-5, atol=1e-8)
    assert loss / 3 == pytest.approx(value, rel=1e-6)
    assert cross_entropy(p, labels, target) == pytest.approx(value, rel=1e-6)
    assert correct == 1


def test_another_loss_is_refused(digits):
    x, y = digits
    model = convnet()
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    with pytest.raises(ModelError, match="'mse'"):
        fit_conv(model, x, y, None, None, epochs=1, batch_size=64, seed=0)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_forward_matches_predict(digits, padding):
    x, _ = digits
    model = convnet(padding=padding)
    want = model.predict(scaled(x), verbose=0)
    got = conv_forward(model, x)
    assert got.dtype == np.float32 and got.shape == (len(x), 10)
    np.testing.assert_allclose(got, want, atol=5e-7)
    # one image alone, on the calling thread: its products have other row counts, which OpenBLAS
    # may round differently (1 ulp with its Haswell kernels on an AMD EPYC, 2026-12-01; the same
    # bits on the AVX-512 machines of earlier sessions)
    np.testing.assert_allclose(conv_forward(model, x[:1]), got[:1], rtol=1e-6, atol=1e-9)


def _state(model, opt):
    return [np.asarray(w) for w in model.get_weights()] + [
        np.asarray(keras.ops.convert_to_numpy(v)) for v in opt.variables
    ]


def test_resume_is_bit_identical(digits):
    x, y = digits
    a = convnet()
    b = twin(a)
    opt_a, opt_b = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)
    h_a = fit_conv(a, x, y, x[:40], y[:40], epochs=2, batch_size=64, seed=3, optimizer=opt_a)
    h_b1 = fit_conv(b, x, y, x[:40], y[:40], epochs=1, batch_size=64, seed=3, optimizer=opt_b)
    h_b2 = fit_conv(b, x, y, x[:40], y[:40], epochs=2, batch_size=64, seed=3, optimizer=opt_b,
                    initial_epoch=1)
    assert h_a["loss"] == h_b1["loss"] + h_b2["loss"]
    for sa, sb in zip(_state(a, opt_a), _state(b, opt_b), strict=True):
        np.testing.assert_array_equal(sa, sb)


def test_dropout_is_seeded_and_thread_count_free(digits):
    x, y = digits
    base = convnet()
    runs = {}
    for name, seed, threads in [("s1", 1, 2), ("s1-one-thread", 1, 1), ("s2", 2, 2)]:
        m = twin(base)
        fit_conv(m, x, y, None, None, epochs=1, batch_size=64, seed=seed, threads=threads,
                 optimizer=keras.optimizers.Adam(1e-3))
        runs[name] = m.get_weights()
    for a, b in zip(runs["s1"], runs["s1-one-thread"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(runs["s1"], runs["s2"], strict=True))


@pytest.mark.parametrize("rate", [0.5, 0.2])
def test_dropout_keeps_one_minus_rate_of_the_units_independently(rate):
    from mnistlab.engine import conv_kernels as K

    units, rows = 1600, 64
    keep = np.float32(1 - rate)
    a = np.ones(rows * units, np.float32)
    K._dropout(a, np.array([987654321, 3000, units], np.int64), 0, rows, 0, keep)
    kept = (a != 0).reshape(rows, units)
    assert abs(kept.mean() - (1 - rate)) < 0.01
    assert np.allclose(a[a != 0], 1 / keep)  # inverted dropout
    # rows (samples) and units (features) are not correlated: each row keeps ~its share
    assert np.abs(kept.mean(1) - (1 - rate)).max() < 0.06
    assert abs(np.corrcoef(kept[:, :-1].ravel(), kept[:, 1:].ravel())[0, 1]) < 0.02
    # another key (the next epoch) draws another mask
    b = np.ones(rows * units, np.float32)
    K._dropout(b, np.array([987654322, 3000, units], np.int64), 0, rows, 0, keep)
    assert 0.3 < ((a != 0) == (b != 0)).mean() < 0.75


def test_callback_stops_training(digits):
    x, y = digits
    model = convnet()
    seen = []

    class Stop:
        def on_epoch_end(self, epoch, logs):
            seen.append((epoch, sorted(logs)))
            return True

    h = fit_conv(model, x, y, x[:40], y[:40], epochs=5, batch_size=64, seed=0,
                 optimizer=keras.optimizers.Adam(1e-3), callbacks=[Stop()])
    assert len(h["loss"]) == 1
    assert seen == [(0, ["accuracy", "loss", "val_accuracy", "val_loss"])]


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (lambda: keras.layers.BatchNormalization(), "BatchNormalization"),
        (lambda: keras.layers.Conv2D(8, 3, strides=2), "strides"),
        (lambda: keras.layers.Conv2D(8, 3, activation="tanh"), "tanh"),
        (lambda: keras.layers.MaxPooling2D(2, strides=1), "strides"),
    ],
)
def test_unsupported_layers_are_refused(layer, message):
    model = keras.Sequential([keras.Input(shape=(28, 28, 1)), layer(), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    with pytest.raises(ModelError, match=message):
        conv_forward(model, np.zeros((1, 28, 28), np.uint8))


def test_bad_data_and_optimizer_are_refused(digits):
    x, y = digits
    model = convnet()
    with pytest.raises(ModelError, match=r"x_train.shape=\(320, 27, 28\)"):
        fit_conv(model, x[:, 1:], y, None, None, epochs=1, batch_size=64, seed=0,
                 optimizer=keras.optimizers.Adam())
    with pytest.raises(ModelError, match="RMSprop"):
        fit_conv(model, x, y, None, None, epochs=1, batch_size=64, seed=0,
                 optimizer=keras.optimizers.RMSprop())


@pytest.mark.parametrize("schedule", [
    lambda: keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5),
    lambda: keras.optimizers.schedules.CosineDecay(1e-3, 10, warmup_target=1e-2, warmup_steps=3),
], ids=["exponential", "cosine-warm-up"])
def test_other_learning_rate_schedules_are_refused(digits, schedule):
    x, y = digits
    with pytest.raises(ModelError, match="CosineDecay"):
        fit_conv(convnet(), x, y, None, None, epochs=1, batch_size=64, seed=0,
                 optimizer=keras.optimizers.Adam(schedule()))


def test_other_pool_windows_match_model_fit(digits):
    # 2x2 windows take a fast path of their own; 3x3 and 2x3 ones the general loop; a linear
    # conv's bias gradient (taken from its pool's) has no relu mask
    x, y = digits
    keras.utils.set_random_seed(4)
    ref = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(3),
        keras.layers.Conv2D(16, 3, padding="same"),
        keras.layers.MaxPooling2D((2, 3)),
        keras.layers.Conv2D(12, 3, padding="same"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    ours = twin(ref)
    ref.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                loss="categorical_crossentropy")
    h_ref = ref.fit(scaled(x), keras.utils.to_categorical(y, 10), batch_size=64, epochs=1,
                    shuffle=False, verbose=0).history
    h = fit_conv(ours, x, y, None, None, epochs=1, batch_size=64, seed=0, shuffle=False,
                 optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    assert h["loss"][0] == pytest.approx(h_ref["loss"][0], rel=1e-6)
    for a, b in zip(ref.get_weights(), ours.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, atol=3e-7)
