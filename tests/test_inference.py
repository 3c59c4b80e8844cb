"""Predictor: the numpy forward pass, input shapes, pictures, statuses (mnistlab.inference)."""

from __future__ import annotations

import io
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest
from PIL import Image
from samplekit import mnist_sample

from mnistlab.errors import ImageError, ModelError, RunError
from mnistlab.inference import Predictor
from mnistlab.preprocess import PreprocessParams


def _mlp(activation="relu", input_shape=(28, 28), extra=(), flatten=True) -> keras.Model:
    """The tutorial's MLP (784-100-64-32-10), random weights, seeded."""
    keras.utils.set_random_seed(0)
    layers = [keras.Input(input_shape)]
    if flatten:
        layers.append(keras.layers.Flatten(name="flatten"))
    layers += [
        keras.layers.Dense(100, activation=activation, name="dense1"),
        *extra,
        keras.layers.Dense(64, activation=activation, name="dense2"),
        keras.layers.Dense(32, activation=activation, name="dense3"),
        keras.layers.Dense(10, activation="softmax", name="output"),
    ]
    return keras.Sequential(layers)


def _images(n=64, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


# The numpy forward pass matches Keras ------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "elu", "selu", "silu"])
def test_forward_pass_matches_model_predict(activation):
    model = _mlp(activation)
    x = _images()
    expected = model.predict(x.astype(np.float32) / 255.0, verbose=0)
    got = Predictor.from_model(model).predict_proba(x)
    assert got.dtype == np.float32 and got.shape == (64, 10)
    assert np.max(np.abs(got - expected)) < 1e-5


def test_dropout_batchnorm_and_activation_layers():
    bn = keras.layers.BatchNormalization()
    model = _mlp(extra=[keras.layers.Dropout(0.5), bn, keras.layers.Activation("tanh")])
    bn.moving_mean.assign(np.linspace(-1, 1, 100).astype(np.float32))
    bn.moving_variance.assign(np.linspace(0.5, 2, 100).astype(np.float32))
    x = _images()
    expected = model.predict(x.astype(np.float32) / 255.0, verbose=0)
    assert np.max(np.abs(Predictor.from_model(model).predict_proba(x) - expected)) < 1e-5


@pytest.mark.parametrize("shape", [(784,), (28, 28, 1)])
def test_flat_and_channel_input_models(shape):
    model = _mlp(input_shape=shape, flatten=len(shape) > 1)
    x = _images()
    expected = model.predict((x.astype(np.float32) / 255.0).reshape(-1, *shape), verbose=0)
    assert np.max(np.abs(Predictor.from_model(model).predict_proba(x) - expected)) < 1e-5


def test_functional_model():
    inputs = keras.Input((28, 28))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(16, activation="relu")(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    x = _images()
    expected = model.predict(x.astype(np.float32) / 255.0, verbose=0)
    assert np.max(np.abs(Predictor.from_model(model).predict_proba(x) - expected)) < 1e-5


def test_large_batches_cross_block_boundaries():
    model = _mlp()
    x = _images(1300, seed=3)
    expected = model.predict(x.astype(np.float32) / 255.0, verbose=0, batch_size=256)
    assert np.max(np.abs(Predictor.from_model(model).predict_proba(x) - expected)) < 1e-5


@pytest.mark.parametrize(
    ("model", "said"),
    [
        (
            lambda: keras.Sequential(
                [keras.Input((784,)), keras.layers.Dense(10), keras.layers.LayerNormalization(),
                 keras.layers.Softmax()]
            ),
            "LayerNormalization",
        ),
        (
            lambda: keras.Sequential(
                [keras.Input((784,)), keras.layers.Dense(10, activation=lambda t: t * 2),
                 keras.layers.Softmax()]
            ),
            "activation",
        ),
        (
            lambda: keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)]),
            "softmax",
        ),
        (
            lambda: keras.Sequential(
                [keras.Input((28, 28)), keras.layers.Dense(10, activation="softmax")]
            ),
            "Flatten",
        ),
        (
            lambda: keras.Sequential(
                [keras.Input((20, 30)), keras.layers.Flatten(),
                 keras.layers.Dense(10, activation="softmax")]
            ),
            "square",
        ),
    ],
)  # fmt: skip
def test_unknown_models_are_refused(model, said):
    with pytest.raises(ModelError, match=said):
        Predictor.from_model(model())


def test_residual_model_is_refused():
    inputs = keras.Input((784,))
    h = keras.layers.Dense(784, activation="relu")(inputs)
    h = keras.layers.Add()([inputs, h])
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
    with pytest.raises(ModelError, match="Add"):
        Predictor.from_model(model)


def test_class_names_and_preprocess_size_must_fit_the_model():
    with pytest.raises(ModelError, match="3 class names"):
        Predictor.from_model(_mlp(), class_names=["a", "b", "c"])
    with pytest.raises(ModelError, match="size=28"):
        Predictor.from_model(_mlp(), preprocess_params=PreprocessParams.for_size(8))


def test_from_run_of_a_missing_directory(tmp_path):
    with pytest.raises(RunError):
        Predictor.from_run(tmp_path / "no-such-run")


# Array shapes and values -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_model(_mlp())


def test_every_accepted_array_shape_gives_the_same_probabilities(predictor):
    x = _images(5)
    expected = predictor.predict_proba(x)
    batches = [x, x.reshape(5, 784), x[..., None]]
    for b in batches:
        np.testing.assert_array_equal(predictor.predict_proba(b), expected)
    for single in (x[2], x[2].reshape(784), x[2][..., None]):
        np.testing.assert_allclose(predictor.predict_proba(single), expected[2:3], atol=1e-6)
        p = predictor.predict(single)
        np.testing.assert_allclose(p.probabilities, expected[2], atol=1e-6)
    for b in batches:
        results = predictor.predict_many(b)
        assert [r.label for r in results] == list(np.argmax(expected, 1))


def test_uint8_and_float_scales_agree(predictor):
    x = _images(4)
    expected = predictor.predict_proba(x)
    for variant in (x / 255.0, (x / 255.0).astype(np.float32), x.astype(np.float32),
                    x.astype(np.int64), x.astype(np.float64)):  # fmt: skip
        np.testing.assert_allclose(predictor.predict_proba(variant), expected, atol=1e-6)


def test_caller_arrays_are_not_modified(predictor):
    x = _images(3).astype(np.float32) / 255.0
    before = x.copy()
    predictor.predict_proba(x)
    predictor.predict_many(x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize(
    ("x", "said"),
    [
        (np.full((28, 28), np.nan), "NaN"),
        (np.full((2, 784), np.inf), "NaN or infinite"),
        (np.full((28, 28), -0.5), "0-255"),
        (np.full((28, 28), 256.0), "0-255"),
        (np.zeros((3, 27, 27)), "received shape"),
        (np.zeros((2, 783)), "received shape"),
    ],
)
def test_bad_arrays_are_image_errors(predictor, x, said):
    with pytest.raises(ImageError, match=said):
        predictor.predict_proba(x)


def test_predict_and_predict_many_refuse_the_wrong_arity(predictor):
    with pytest.raises(ImageError, match="predict_many"):
        predictor.predict(_images(2))
    with pytest.raises(ImageError, match="Use predict for one image"):
        predictor.predict_many(_images(1)[0])


def test_an_empty_batch(predictor):
    assert predictor.predict_proba(np.zeros((0, 784), np.uint8)).shape == (0, 10)
    assert predictor.predict_many([]) == []


@pytest.mark.parametrize("rows", [600, 1300], ids=["numpy", "compiled"])
def test_threads_get_the_same_answers(predictor, rows):
    batches = [_images(rows, seed=s) for s in range(4)]
    serial = [predictor.predict_proba(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(predictor.predict_proba, batches * 2))
    for got, want in zip(parallel, serial * 2, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
def test_big_batches_match_the_model(activation):
    """From 1,024 rows a plain Dense chain runs compiled on two threads (gelu: numpy still)."""
    model = _mlp(activation)
    x = _images(1500, seed=4)
    expected = model.predict(x.astype(np.float32) / 255.0, verbose=0, batch_size=500)
    predictor = Predictor.from_model(model)
    got = predictor.predict_proba(x)
    assert np.max(np.abs(got - expected)) < 1e-5
    assert bool(predictor.network.compiled) == (activation != "gelu")


def test_big_batches_agree_with_small_ones_whatever_the_input_type(predictor):
    x = _images(2600, seed=9)
    big = predictor.predict_proba(x)
    assert predictor.network.compiled  # the compiled path ran
    small = np.concatenate([predictor.predict_proba(x[i : i + 500]) for i in range(0, 2600, 500)])
    np.testing.assert_allclose(big, small, atol=1e-6)
    assert (big.argmax(1) == small.argmax(1)).all()
    # a row's numbers do not depend on the batch around it (chunks start at multiples of 512)
    np.testing.assert_array_equal(predictor.predict_proba(x[:1536]), big[:1536])
    for variant in (x.astype(np.float32) / 255, x.astype(np.float32), x.astype(np.float64)):
        np.testing.assert_allclose(predictor.predict_proba(variant), big, atol=1e-6)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:os.fork")  # JAX's warning; the child never touches JAX
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_forked_child_predicts_big_batches(predictor):
    """A server's forked worker: the helper thread of the parent does not exist there."""
    x = _images(1100)
    want = predictor.predict_proba(x)  # the helper thread starts in this process
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 when it gets the same numbers
        os._exit(0 if np.array_equal(predictor.predict_proba(x), want) else 1)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(done[1]) == 0


# Pictures, with a model that has learnt digits -------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    """The tutorial MLP fitted briefly (Adam) on 4,000 sample digits; 1,000 held back."""
    x, y = mnist_sample()
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    model = _mlp()
    model.compile(optimizer=keras.optimizers.Adam(0.002), loss="sparse_categorical_crossentropy")
    model.fit(x[:4000] / 255.0, y[:4000], epochs=8, batch_size=64, verbose=0, shuffle=False)
    return Predictor.from_model(model), x[4000:], y[4000:]


def _photo(digit: np.ndarray) -> bytes:
    """A dark-ink-on-paper JPEG of a digit, small and off-centre on a big sheet."""
    strokes = np.asarray(Image.fromarray(digit).resize((90, 90), Image.Resampling.BICUBIC)) / 255
    sheet = np.full((240, 320), 225.0)
    sheet[20:110, 200:290] += (35.0 - 225.0) * strokes
    buf = io.BytesIO()
    Image.fromarray(np.clip(sheet, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def test_photos_are_preprocessed_and_recognised(trained, tmp_path):
    predictor, x, y = trained
    digits, labels = x[:40], y[:40]
    originals = [r.label for r in predictor.predict_many(digits)]
    paths = []
    for i, d in enumerate(digits):
        paths.append(tmp_path / f"digit{i}.jpg")
        paths[-1].write_bytes(_photo(d))
    photos = predictor.predict_many(paths)
    assert all(r.status == "ok" for r in photos)
    agree = np.mean([a == b.label for a, b in zip(originals, photos, strict=True)])
    correct = np.mean([b.label == t for b, t in zip(photos, labels, strict=True)])
    assert agree >= 0.85 and correct >= 0.75, (agree, correct)
    one = predictor.predict(paths[0], top_k=3)
    assert one.image.shape == (28, 28) and len(one.top_k) == 3
    assert [t[0] for t in one.top_k][0] == one.label and one.name == str(one.label)
    assert one.top_k[0][2] >= one.top_k[1][2] >= one.top_k[2][2]
    assert abs(one.confidence - float(one.probabilities[one.label])) < 1e-7


def test_model_shaped_arrays_are_not_preprocessed_unless_asked(trained):
    predictor, x, _ = trained
    inverted = 255 - x[0]  # black on white: nonsense unless preprocessed
    raw = predictor.predict(inverted)
    fixed = predictor.predict(inverted, preprocess=True)
    np.testing.assert_allclose(raw.image, inverted / 255.0, atol=1e-6)
    assert fixed.label == predictor.predict(x[0]).label
    many = predictor.predict_many(np.stack([inverted] * 2), preprocess=True)
    assert [m.label for m in many] == [fixed.label] * 2


def test_preprocess_false_refuses_pictures_that_do_not_fit(trained):
    predictor, x, _ = trained
    with pytest.raises(ImageError, match="preprocess=True"):
        predictor.predict(np.zeros((50, 60), np.uint8), preprocess=False)
    with pytest.raises(ImageError, match="preprocess=True"):
        predictor.predict(_photo(x[0]), preprocess=False)
    buf = io.BytesIO()
    Image.fromarray(x[0]).save(buf, format="PNG")
    exact = predictor.predict(buf.getvalue(), preprocess=False)
    np.testing.assert_allclose(exact.image, x[0] / 255.0, atol=1e-6)


def test_pil_images_and_big_arrays_go_through_preprocessing(trained):
    predictor, x, _ = trained
    photo = Image.open(io.BytesIO(_photo(x[1])))
    from_pil = predictor.predict(photo)
    from_array = predictor.predict(np.asarray(photo))
    assert from_pil.status == from_array.status == "ok"
    np.testing.assert_allclose(from_pil.image, from_array.image, atol=1e-6)


def test_blank_and_noise_get_no_label(trained):
    predictor, _, _ = trained
    blank_sheet = predictor.predict(np.full((200, 300), 240, np.uint8))
    black_28 = predictor.predict(np.zeros((28, 28), np.uint8))
    noise = predictor.predict(np.random.default_rng(0).integers(0, 256, (90, 90), dtype=np.uint8))
    for r, status in ((blank_sheet, "blank"), (black_28, "blank"), (noise, "no_digit")):
        assert r.status == status and r.label is None and r.name is None and r.top_k == ()
        assert r.message and r.probabilities.shape == (10,)


# A real run directory ----------------------------------------------------------------------------


def test_from_run_uses_the_runs_model_size_and_class_names(digits_run):
    from mnistlab.data import load_dataset

    predictor = Predictor.from_run(digits_run.path)
    assert predictor.image_size == 8 and predictor.preprocess_params.size == 8
    assert list(predictor.class_names) == digits_run.manifest["dataset"]["class_names"]
    ds = load_dataset("digits")
    model = digits_run.load_model()
    expected = model.predict(ds.x_test[:50] / 255.0, verbose=0)
    assert np.max(np.abs(predictor.predict_proba(ds.x_test[:50]) - expected)) < 1e-5
    sheet = np.full((120, 100), 230.0)
    big = np.asarray(Image.fromarray(ds.x_test[0]).resize((64, 64), Image.Resampling.NEAREST))
    sheet[30:94, 20:84] -= big * (200.0 / 255.0)
    photo = predictor.predict(sheet.astype(np.uint8))
    assert photo.status == "ok" and photo.image.shape == (8, 8)
