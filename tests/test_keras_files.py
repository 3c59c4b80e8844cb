"""Templates of Keras' model files (``mnistlab.keras_files``): filled with a model's arrays they
are byte for byte what Keras writes for it."""

import os
import re
import time
import zipfile

import numpy as np
import pytest

from mnistlab import keras_files
from mnistlab.config import load_config


@pytest.fixture
def templates(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_KERAS_FILES", str(tmp_path / "templates"))
    return tmp_path / "templates"


def _model(*overrides):
    from mnistlab.model import build_model, compile_model

    cfg = load_config(overrides=list(overrides), data__dataset="digits")
    model = build_model(cfg.model, (8, 8), 10, seed=cfg.seed)
    compile_model(model, cfg.train, 10)
    model.optimizer.build(model.trainable_variables)
    return model


def _save(model, folder):
    model.save(folder / "m.keras")
    model.save(folder / "m.h5")
    with zipfile.ZipFile(folder / "m.keras") as z:
        return (folder / "m.h5").read_bytes(), z.read("model.weights.h5"), z.read("config.json")


def _ids(config: bytes) -> bytes:
    """Keras numbers an object used in several places by its id(): number them in order."""
    ids: dict[bytes, bytes] = {}
    out = re.sub(rb'"shared_object_id": (\d+)',
                 lambda m: b"%d" % ids.setdefault(m[1], len(ids)), config)
    assert ids
    return out


def _randomize(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rate = model.optimizer.learning_rate  # stays: Keras' files hold it in the config too
    for v in [*model.weights, *model.optimizer.variables]:
        if v is rate:
            continue
        a = np.asarray(v.numpy())
        v.assign((rng.integers(1, 10_000, a.shape) if a.dtype.kind == "i"
                  else rng.standard_normal(a.shape)).astype(a.dtype))


def test_a_template_filled_with_other_arrays_is_what_keras_writes(templates, tmp_path):
    first = _model("train.momentum=0.9")
    _randomize(first, 0)  # as training leaves them: momentums no longer all zero
    assert keras_files.make_from_model("k", first)
    template = keras_files.Template.load("k")
    # the same model with other weights, step count and momentums, saved for the first time (a
    # model's second save orders its compile config otherwise: runs save each model once)
    model = _model("train.momentum=0.9")
    _randomize(model, 1)
    h5, weights, config = _save(model, tmp_path)
    arrays = keras_files.variables(model)
    assert len(arrays) == 2 * 4 + 2 + 2 * 4  # weights, step count, rate, a momentum per weight
    assert template.arrays_fit(arrays)
    assert template.fill("model.h5", arrays) == h5
    assert template.fill("weights.h5", arrays) == weights
    ours = tmp_path / "ours.keras"
    ours.write_bytes(template.keras_zip(arrays))
    with zipfile.ZipFile(ours) as z:
        assert z.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        assert _ids(z.read("config.json")) == _ids(config)
        assert z.read("model.weights.h5") == weights
    assert not template.arrays_fit(arrays[:-1])
    assert not template.arrays_fit([a.astype(np.float64) for a in arrays])


def test_variables_with_the_same_bytes_make_no_template(templates):
    # two fresh hidden layers of 8: their zero biases cannot be told apart in the file
    assert not keras_files.make_from_model("k", _model("model.hidden=[8, 8]"))
    assert keras_files.Template.load("k") is None
    assert not templates.exists() or not any(templates.iterdir())


def test_off_keeps_and_reads_nothing(monkeypatch):
    monkeypatch.setenv("MNISTLAB_KERAS_FILES", "off")
    assert keras_files.folder() is None
    assert keras_files.Template.load("k") is None
    assert not keras_files.make_from_model("k", _model())


def test_the_key_follows_every_setting_but_the_epochs():
    def key(*overrides, shape=(28, 28)):
        return keras_files.key(load_config(overrides=list(overrides)), shape, 10)

    assert key() == key("train.epochs=3")
    assert len({key(), key("seed=1"), key("train.learning_rate=0.1"), key("model.hidden=[10]"),
                key("train.momentum=0.5"), key(shape=(8, 8))}) == 6


def test_the_least_recently_used_templates_go(templates, monkeypatch):
    monkeypatch.setattr(keras_files, "KEEP", 2)
    model = _model()
    for i, name in enumerate(("a", "b")):
        assert keras_files.make_from_model(name, model)
        os.utime(templates / name, (time.time() - 100 + i, time.time() - 100 + i))
    assert keras_files.Template.load("a") is not None  # used now: newer than b
    assert keras_files.make_from_model("c", model)
    assert sorted(p.name for p in templates.iterdir()) == ["a", "c"]


def test_no_template_of_big_files_or_into_a_folder_that_cannot_be_written(templates, tmp_path,
                                                                            monkeypatch):
    model = _model()
    monkeypatch.setattr(keras_files, "MAX_BYTES", 10_000)  # the digits model's files: ~40 KB
    assert not keras_files.make_from_model("k", model)
    monkeypatch.undo()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MNISTLAB_KERAS_FILES", str(blocker / "templates"))
    assert not keras_files.make_from_model("k", model)
