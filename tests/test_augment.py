"""Seeded on-the-fly augmentation: the transform itself, and runs that train with it."""

import os
import signal

import numpy as np
import pytest

from mnistlab.augment import augment_epoch, draw, transform
from mnistlab.config import AugmentConfig, load_config
from mnistlab.errors import ConfigError, TrainingInterrupted
from mnistlab.runs import load_run
from mnistlab.training import compare_weights, train

IMAGES = np.random.default_rng(0).random((40, 12, 10), dtype=np.float32)
ON = AugmentConfig(shift=0.1, rotation=15, zoom=0.1, flip=True, erase=0.5)


def _still(n, **change):
    t = {"angle": np.zeros(n, np.float32), "scale": np.ones(n, np.float32),
         "dx": np.zeros(n, np.float32), "dy": np.zeros(n, np.float32), "flip": np.zeros(n, bool),
         "erase": np.zeros((n, 4), np.float32)}
    for k, v in change.items():
        t[k][:] = v
    return t


def test_identity_flip_and_whole_pixel_shifts_are_exact():
    n = len(IMAGES)
    assert np.array_equal(transform(IMAGES, _still(n)), IMAGES)
    assert np.array_equal(transform(IMAGES, _still(n, flip=True)), IMAGES[:, :, ::-1])
    right = transform(IMAGES, _still(n, dx=2 / 10))  # two pixels right, black comes in
    assert np.array_equal(right[:, :, 2:], IMAGES[:, :, :-2]) and not right[:, :, :2].any()
    down = transform(IMAGES, _still(n, dy=1 / 12))
    assert np.array_equal(down[:, 1:], IMAGES[:, :-1]) and not down[:, 0].any()


def test_an_epochs_images_warped_on_two_threads_are_the_one_threads(monkeypatch):
    """Above ``SPLIT_AT`` images a half the warp runs on a second thread: the same bits."""
    from concurrent.futures import ThreadPoolExecutor

    from mnistlab import augment

    images = np.random.default_rng(1).integers(0, 256, (3001, 28, 28), dtype=np.uint8)
    t = draw(ON, len(images), seed=5, epoch=3)
    used = []
    monkeypatch.setattr(ThreadPoolExecutor, "submit",
                        lambda pool, *a, _submit=ThreadPoolExecutor.submit: used.append(1)
                        or _submit(pool, *a))
    monkeypatch.setattr(augment, "_cores", lambda: 2)
    two = transform(images, t)
    monkeypatch.setattr(augment, "SPLIT_AT", len(images))
    one = transform(images, t)
    assert used == [1] and np.array_equal(one, two) and one.dtype == np.float32
    assert not np.allclose(two, images / np.float32(255))  # the images were transformed


def test_erasing_blanks_exactly_its_rectangle():
    n = len(IMAGES)  # 12 rows, 10 columns
    t = _still(n, dx=1 / 10)
    t["erase"][0] = [0.25, 0.5, 0.5, 0.3]  # rows 3-8, columns 5-7
    t["erase"][1] = [0.0, 0.0, 0.01, 0.01]  # too small to round: still one pixel
    out, shifted = transform(IMAGES, t), transform(IMAGES, _still(n, dx=1 / 10))
    assert not out[0, 3:9, 5:8].any() and out[0, 3:9, 5:8].size == 18
    blanked = np.zeros(out.shape, bool)
    blanked[0, 3:9, 5:8] = blanked[1, 0, 0] = True
    assert np.array_equal(out[~blanked], shifted[~blanked]) and not out[1, 0, 0]


def test_erasing_draws_apart_from_the_other_transforms():
    plain, erased = draw(AugmentConfig(shift=0.1), 4000, 7, 0), draw(ON, 4000, 7, 0)
    assert np.array_equal(plain["dx"], erased["dx"]) and not plain["erase"].any()
    box = erased["erase"]
    drawn = box[:, 2] > 0
    assert 0.45 < drawn.mean() < 0.55
    area = box[drawn, 2] * box[drawn, 3]
    assert area.min() >= 0.019 and area.max() <= 0.251
    assert np.all(box[:, 0] + box[:, 2] <= 1 + 1e-6) and np.all(box[:, 1] + box[:, 3] <= 1 + 1e-6)
    every = draw(AugmentConfig(erase=1.0), 100, 7, 0)["erase"]
    assert np.all(every[:, 2] > 0)


def test_rotation_by_a_quarter_turn_and_zoom_keep_the_centre():
    square = np.random.default_rng(1).random((3, 9, 9), dtype=np.float32)
    turned = transform(square, _still(3, angle=np.pi / 2))
    assert np.allclose(turned, np.rot90(square, 1, axes=(1, 2)), atol=1e-5) or np.allclose(
        turned, np.rot90(square, -1, axes=(1, 2)), atol=1e-5)
    zoomed = transform(square, _still(3, scale=2.0))
    assert np.allclose(zoomed[:, 4, 4], square[:, 4, 4])  # the centre stays put


def test_each_epoch_draws_its_own_seeded_transforms():
    a, b = augment_epoch(IMAGES, ON, 7, 0), augment_epoch(IMAGES, ON, 7, 0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, augment_epoch(IMAGES, ON, 7, 1))
    assert not np.array_equal(a, augment_epoch(IMAGES, ON, 8, 0))
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    t = draw(AugmentConfig(shift=0.1), 1000, 7, 0)
    assert np.abs(t["dx"]).max() <= 0.1 and not t["angle"].any() and not t["flip"].any()
    assert np.all(t["scale"] == 1)


def test_bad_settings_are_refused_with_the_bounds():
    with pytest.raises(ConfigError, match="augment.rotation"):
        load_config("cnn", overrides=["augment.rotation=400"])
    with pytest.raises(ConfigError, match="unknown key 'augment.shear'"):
        load_config("cnn", overrides=["augment.shear=0.1"])


def _cfg(kind):
    extra = ['model.conv=[{filters=4, padding="same", batch_norm=true}]'] if kind == "cnn" else []
    return load_config(kind, data__dataset="digits", overrides=[
        *extra, "train.epochs=3", "augment.shift=0.1", "augment.rotation=10", "augment.zoom=0.1",
        "augment.erase=0.5",
        "train.schedule=\"cosine\"", "train.label_smoothing=0.1"])


@pytest.mark.parametrize("kind", ["cnn", "tutorial"])
def test_resume_with_augmentation_is_bit_identical(tmp_path, kind):
    whole = train(_cfg(kind), out=tmp_path / "whole", report=kind == "cnn")

    def stop_after_first(epoch, epochs, logs):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(_cfg(kind), out=tmp_path / "cut", report=False, progress=stop_after_first)
    (run_dir,) = (tmp_path / "cut").iterdir()
    done = train(resume=run_dir, report=False)
    assert compare_weights(done.load_model(), whole.load_model())
    assert load_run(run_dir).metrics == whole.metrics
    # Augmentation changed what was trained: the same run without it ends elsewhere.
    plain = _cfg(kind).model_copy(update={"augment": AugmentConfig()})
    assert not compare_weights(train(plain, out=tmp_path / "plain", report=False).load_model(),
                               whole.load_model())
    if kind == "cnn":
        html = (whole.path / "report.html").read_text()
        assert (whole.path / "augmented.png").is_file()
        assert "augmented on the fly" in html and "rotations up to 10°" in html
        assert "a random rectangle blanked in 50% of the images" in html


def test_the_warp_warmed_ahead_is_loaded_not_compiled(tmp_path):
    # engine.warm compiles the warp into the engines' cache folder; a later training process,
    # which may augment before it imports an engine, finds it there
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    warm = "from mnistlab.engine import warm; warm.compile_augment()"
    later = (
        "import numpy as np\n"
        "from mnistlab import augment\n"
        "from mnistlab.config import AugmentConfig\n"
        "t = augment.draw(AugmentConfig(shift=0.2), 3, 1, 0)\n"
        "augment.transform(np.zeros((3, 6, 6), np.uint8), t)\n"
        "stats = augment._warp().stats\n"
        "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n"
    )
    run = [sys.executable, "-c"]
    subprocess.run([*run, warm], env=env, check=True, timeout=300)
    assert list((tmp_path / "mnistlab" / "numba").rglob("*augment*"))  # cached where it belongs
    out = subprocess.run([*run, later], env=env, check=True, timeout=300, capture_output=True,
                         text=True).stdout.split()
    assert out == ["1", "0"]  # one signature loaded from the cache, none compiled
