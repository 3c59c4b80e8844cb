"""The conv engine's Winograd F(2x2, 3x3) convolutions against its im2col ones (and Keras)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("numba")

from mnistlab.engine import conv_kernels as K  # noqa: E402
from mnistlab.engine import conv_plan  # noqa: E402
from mnistlab.engine.conv_loop import conv_forward, fit_conv  # noqa: E402

IM2COL = 1 << 30  # WINOGRAD_MIN_CHANNELS that sends every convolution through im2col


def net(padding, seed=0, dropout=0.0, size=14):
    """Three 3x3 convolutions with 8+ input channels after the first: even, odd and cropped
    output sizes, 'valid' or 'same' padding, an optional dropout before a convolution."""
    keras.utils.set_random_seed(seed)
    layers = [
        keras.Input(shape=(size, size, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", padding=padding),
        keras.layers.Conv2D(16, 3, activation="relu", padding=padding),
        keras.layers.MaxPooling2D(2),
    ]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers += [
        keras.layers.Conv2D(12, 3, activation="relu", padding=padding),
        keras.layers.Flatten(),
        keras.layers.Dense(5, activation="softmax"),
    ]
    return keras.Sequential(layers)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (40, 14, 14), dtype=np.uint8)
    return x, rng.integers(0, 5, 40)


def test_the_plan_sends_3x3_convolutions_with_8_channels_to_winograd():
    layout, _, _ = conv_plan.read_plan(net("valid")).layout(conv_plan.CHUNK)
    convs = layout[layout[:, K.KIND] == K.CONV]
    assert list(convs[:, K.WINO] >= 0) == [False, True, True]  # the first has one channel


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_forward_matches_im2col_and_keras(data, padding, monkeypatch):
    x, _ = data
    model = net(padding)
    fast = conv_forward(model, x)
    monkeypatch.setattr(conv_plan, "WINOGRAD_MIN_CHANNELS", IM2COL)
    slow = conv_forward(model, x)
    want = model.predict((x / np.float32(255))[..., None].astype(np.float32), verbose=0)
    # measured: 4.5e-8 apart, each 3e-8 to 4.5e-8 from Keras
    np.testing.assert_allclose(fast, slow, atol=3e-7)
    np.testing.assert_allclose(fast, want, atol=3e-7)
    assert not np.array_equal(fast, slow)  # really two different computations


@pytest.mark.parametrize(("padding", "dropout"), [("valid", 0.0), ("same", 0.3)])
def test_one_epoch_matches_im2col(data, padding, dropout, monkeypatch):
    # gradients through all three Winograd adjoints (kernel, input tiles, output tiles),
    # through the cropped pool and a dropout in front of a Winograd convolution
    x, y = data
    weights = []
    for min_channels in (8, IM2COL):
        monkeypatch.setattr(conv_plan, "WINOGRAD_MIN_CHANNELS", min_channels)
        model = net(padding, dropout=dropout)
        start = [w.copy() for w in model.get_weights()]
        opt = keras.optimizers.SGD(0.1, momentum=0.9)
        # one epoch, three steps: in a second one a max-pool or relu decision flipped by the
        # two computations' rounding (1e-7 apart) can send a gradient elsewhere (measured once)
        h = fit_conv(model, x, y, x[:8], y[:8], epochs=1, batch_size=16, seed=1, optimizer=opt)
        weights.append([w - s for w, s in zip(model.get_weights(), start, strict=True)])
        weights[-1].append(h["loss"] + h["val_loss"])
    (*fast, loss_fast), (*slow, loss_slow) = weights
    np.testing.assert_allclose(loss_fast, loss_slow, rtol=1e-5)
    for a, b in zip(fast, slow, strict=True):
        assert np.abs(a).max() > 1e-4  # the step moved every variable
        np.testing.assert_allclose(a, b, atol=2e-6 * max(1.0, np.abs(b).max()))


def test_kernels_kept_across_a_workers_chunks_give_the_same_bits(data):
    # a worker transforms the Winograd kernels (U and its transpose) for its first chunk of a
    # batch only: its later chunks must find them untouched in its scratch
    from mnistlab.engine.conv_loop import _pixels, _scratch, loss_targets

    x, y = data
    model = net("same", dropout=0.3)
    plan = conv_plan.read_plan(model)
    rows, scale = _pixels(x, plan, "x")
    idx, n, chunk = np.random.default_rng(5).permutation(len(x))[:32], 32, 8
    drop = np.array([7, 0, plan.mask_units], np.int64)
    target = loss_targets(model, plan.classes)
    layout, s, si = _scratch(plan, chunk, 1)  # one worker: four chunks in turn
    partial, stats = np.empty((4, len(plan.params)), np.float32), np.zeros((4, 2))
    K.gradients(rows, y, idx, scale, chunk, plan.params, layout, plan.keep, drop, s, si, partial,
                stats, target)
    last = layout[-1]
    for c in range(4):  # each chunk alone in fresh scratch, its kernels transformed
        s1, si1, grad = np.zeros_like(s[0]), np.zeros_like(si[0]), np.empty_like(partial[c])
        K.forward_chunk(rows, idx, c * chunk, chunk, scale, plan.params, layout, plan.keep, drop,
                        s1, si1, True)
        p = s1[last[K.OUT] : last[K.OUT] + chunk * plan.classes].reshape(chunk, plan.classes)
        dz = s1[last[K.DOUT] : last[K.DOUT] + chunk * plan.classes].reshape(chunk, plan.classes)
        K._loss_grad(p, y, idx, c * chunk, np.float32(1 / n), target, dz)
        K.backward_chunk(c * chunk, chunk, plan.params, layout, plan.keep, drop, s1, si1, grad)
        assert np.array_equal(grad, partial[c]), c
