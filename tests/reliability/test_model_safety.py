"""Model files that carry code, were tampered with, or are broken: refused with an explanation.

Hostile files are built for real: a plain model saved by Keras, then its ``config.json`` rewritten
(or an ``.h5`` saved with a Lambda / custom layer). Payloads would create a canary file if they ran.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
import zipfile

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mnistlab.cli import cli
from mnistlab.errors import ModelError
from mnistlab.modelfile import load_model_file, read_model_config
from mnistlab.runs import load_run

REFUSED = "refusing to load"


def _plain_model():
    import keras

    inp = keras.Input(shape=(8, 8))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))


def _save(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras's notes on HDF5 and on serialising lambdas
        model.save(path)
    return path


@pytest.fixture(scope="module")
def plain_keras(tmp_path_factory):
    return _save(_plain_model(), tmp_path_factory.mktemp("plain") / "plain.keras")


def _with_config(src, dst, config) -> str:
    """Copy a .keras zip, replacing its config.json with ``config`` (any JSON, or raw bytes)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for item in zi.infolist():
            data = zi.read(item.filename)
            if item.filename == "config.json":
                data = config if isinstance(config, bytes) else json.dumps(config).encode()
            zo.writestr(item, data)
    return dst


def _dense(cfg):
    return next(layer for layer in cfg["config"]["layers"] if layer["class_name"] == "Dense")


# Each edit makes the plain model's config hostile in one way.
def _os_system_layer(cfg, canary):
    _dense(cfg).update(module="os", class_name="system", config={"command": f"touch {canary}"})


def _os_system_activation(cfg, canary):
    _dense(cfg)["config"]["activation"] = {"module": "os", "class_name": "system",
                                           "config": f"touch {canary}", "registered_name": None}


def _builtins_eval_initializer(cfg, canary):
    _dense(cfg)["config"]["kernel_initializer"] = {
        "module": "builtins", "class_name": "function", "registered_name": "function",
        "config": f"eval(\"open('{canary}', 'w')\")"}


def _subprocess_model(cfg, canary):
    cfg.update(module="subprocess", class_name="Popen")


def _allowed_name_from_a_foreign_module(cfg, canary):
    # "Dense" is on the allow-list, but it is to be imported from a module that is not Keras.
    _dense(cfg)["module"] = "canary_module"


def _keras_lookalike_module(cfg, canary):
    _dense(cfg)["module"] = "keras_evil.layers"


def _lambda_layer_as_activation(cfg, canary):
    import keras

    def payload(x):
        open(canary, "w").close()
        return x

    _dense(cfg)["config"]["activation"] = keras.saving.serialize_keras_object(
        keras.layers.Lambda(payload))


HOSTILE = [_os_system_layer, _os_system_activation, _builtins_eval_initializer, _subprocess_model,
           _allowed_name_from_a_foreign_module, _keras_lookalike_module, _lambda_layer_as_activation]


@pytest.mark.parametrize("edit", HOSTILE, ids=lambda f: f.__name__.strip("_"))
def test_malicious_config_is_refused_before_keras_sees_it(plain_keras, tmp_path, edit):
    canary = tmp_path / "CANARY"
    cfg = read_model_config(plain_keras)
    edit(cfg, canary)
    path = _with_config(plain_keras, tmp_path / "evil.keras", cfg)
    with pytest.raises(ModelError) as e:
        load_model_file(path)
    assert str(e.value).startswith(f"{REFUSED} {path}"), e.value
    assert "arbitrary code" in str(e.value)
    assert not canary.exists()


def test_python_lambda_the_allow_list_does_not_see_is_stopped_by_keras_safe_mode(plain_keras, tmp_path):
    """A bare Python lambda as an activation carries no module or layer name; Keras's safe mode
    (which mnistlab always passes) is what refuses it, and the message says so."""
    import keras

    canary = tmp_path / "CANARY"
    cfg = read_model_config(plain_keras)
    target = str(canary)
    payload = lambda x: (open(target, "w").close(), x)[1]  # noqa: E731 (it must be a lambda)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _dense(cfg)["config"]["activation"] = keras.saving.serialize_keras_object(payload)
    path = _with_config(plain_keras, tmp_path / "lambda_act.keras", cfg)
    with pytest.raises(ModelError, match=r"cannot load model .*Python lambda.*arbitrary code"):
        load_model_file(path)
    assert not canary.exists()


def _lambda_model():
    import keras

    inp = keras.Input(shape=(8, 8))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Lambda(lambda t: t * 2)(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


def _custom_model():
    import keras

    @keras.saving.register_keras_serializable(package="reliabilitytest")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2

    inp = keras.Input(shape=(8, 8))
    x = keras.layers.Flatten()(inp)
    x = Doubler()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("make, refused", [(_lambda_model, "Lambda"), (_custom_model, "Doubler")])
def test_lambda_and_custom_layers_are_refused(tmp_path, suffix, make, refused):
    path = _save(make(), tmp_path / f"m{suffix}")
    with pytest.raises(ModelError) as e:
        load_model_file(path)
    msg = str(e.value)
    assert msg.startswith(REFUSED) and refused in msg
    assert "Lambda and custom layers can run arbitrary code" in msg and "Rebuild the model" in msg


def test_plain_models_still_load_in_both_formats(tmp_path):
    model = _plain_model()
    x = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    for suffix in (".keras", ".h5"):
        loaded = load_model_file(_save(model, tmp_path / f"m{suffix}"))
        np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


@pytest.mark.parametrize("name, tamper, fragment", [
    # HDF5 has no checksums: a flipped weight byte still reads, only the sha256 catches it.
    ("model.h5", "flip", "does not match the sha256 recorded in the run's manifest"),
    # Bytes appended to a zip are trailing data, refused before the sha256 is computed.
    ("model.keras", "append", "has 16 bytes of data after its zip archive"),
    ("model.h5", "append", "has 16 bytes of data after its HDF5 content"),
    # A flipped byte inside the zip breaks an entry's CRC, caught before the sha256 is computed.
    ("model.keras", "flip", "is corrupt (bad entry model.weights.h5)"),
])
def test_tampered_run_model_is_refused(digits_run, tmp_path, name, tamper, fragment):
    run_dir = shutil.copytree(digits_run.path, tmp_path / digits_run.path.name)
    path = run_dir / name
    data = bytearray(path.read_bytes())
    if tamper == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data += b"\0" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        load_run(run_dir).load_model(name)
    assert fragment in str(e.value)
    if name == "model.keras":
        res = CliRunner().invoke(cli, ["evaluate", str(run_dir)])
        assert res.exit_code == 1 and res.output.startswith("Error: ") and fragment in res.output


def test_run_model_swapped_for_another_valid_model_fails_its_sha256(digits_run, tmp_path):
    run_dir = shutil.copytree(digits_run.path, tmp_path / digits_run.path.name)
    _save(_plain_model(), run_dir / "model.keras")  # a perfectly good, but different, model
    with pytest.raises(ModelError, match="sha256"):
        load_run(run_dir).load_model()


def _h5(path, **attrs):
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
    return path


@pytest.mark.parametrize("case, fragment", [
    ("empty", "is empty (0 bytes)"),
    ("text", "not a Keras model file"),
    ("zip_without_config", "truncated or corrupt"),
    ("zip_config_not_json", "truncated or corrupt"),
    ("zip_config_is_a_list", "model config should be a JSON object, received a JSON list"),
    ("zip_config_is_a_number", "received a JSON int"),
    ("zip_class_name_is_a_list", REFUSED),
    ("zip_deeply_nested", "truncated or corrupt"),
    ("zip_crc_damaged", "corrupt"),
    ("h5_truncated", "truncated or corrupt"),
    ("h5_weights_only", "without a model config"),
    ("h5_config_not_text", "truncated or corrupt"),
    ("h5_config_is_a_list", "received a JSON list"),
    ("directory", "not found"),
])
def test_broken_files_get_an_honest_message(plain_keras, tmp_path, case, fragment):
    p = tmp_path / ("m.h5" if case.startswith("h5") else "m.keras")
    if case == "empty":
        p.write_bytes(b"")
    elif case == "text":
        p.write_text("this is not a model")
    elif case == "zip_without_config":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("metadata.json", "{}")
    elif case == "zip_config_not_json":
        _with_config(plain_keras, p, b"{not json")
    elif case == "zip_config_is_a_list":
        _with_config(plain_keras, p, [1, 2])
    elif case == "zip_config_is_a_number":
        _with_config(plain_keras, p, 7)
    elif case == "zip_class_name_is_a_list":
        _with_config(plain_keras, p, {"class_name": ["Dense"], "config": {}})
    elif case == "zip_deeply_nested":
        _with_config(plain_keras, p, b"[" * 100_000 + b"]" * 100_000)
    elif case == "zip_crc_damaged":
        shutil.copy(plain_keras, p)
        data = bytearray(p.read_bytes())
        with zipfile.ZipFile(p) as z:
            info = z.getinfo("model.weights.h5")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
        data[start] ^= 0xFF
        p.write_bytes(bytes(data))
    elif case == "h5_truncated":
        _save(_plain_model(), p)
        p.write_bytes(p.read_bytes()[:3000])
    elif case == "h5_weights_only":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _plain_model().save_weights(tmp_path / "w.weights.h5")
        p = tmp_path / "w.weights.h5"
    elif case == "h5_config_not_text":
        _h5(p, model_config=np.arange(3))
    elif case == "h5_config_is_a_list":
        _h5(p, model_config="[1, 2]")
    elif case == "directory":
        p.mkdir()
    with pytest.raises(ModelError) as e:
        load_model_file(p)
    assert fragment in str(e.value), e.value
    if case != "directory":
        assert "not found" not in str(e.value).lower()
    res = CliRunner().invoke(cli, ["evaluate", "--model", str(p), "--dataset", "digits"])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "Traceback" not in res.output


def test_hostile_copy_keeps_the_rest_of_the_config_untouched(plain_keras):
    """Guard for the tests above: the edits change only what they say."""
    cfg = read_model_config(plain_keras)
    edited = copy.deepcopy(cfg)
    _keras_lookalike_module(edited, "unused")
    assert edited != cfg and _dense(edited)["config"] == _dense(cfg)["config"]
