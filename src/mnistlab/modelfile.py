"""Load ``.keras`` and ``.h5`` model files safely.

Keras model files can carry code (``Lambda`` layers, custom objects). mnistlab only loads files whose
layers are all on an allow-list of plain layer classes, always with ``safe_mode=True``, and checks a
run's model against the sha256 recorded in its manifest before loading it.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

from mnistlab.backend import without_tensorflow
from mnistlab.errors import ModelError, shorten
from mnistlab.files import sha256_file
from mnistlab.modelformat import (
    MAX_CONFIG_BYTES,
    check_zip_members,
    container,
    read_member,
    verify_members,
)

ALLOWED_LAYERS = frozenset(
    {"InputLayer", "Flatten", "Dense", "Dropout", "Reshape", "Rescaling", "Activation",
     "BatchNormalization", "LayerNormalization", "Conv2D", "MaxPooling2D", "AveragePooling2D",
     "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ReLU", "Softmax", "Sequential", "Functional",
     "Model"}
)


def _is_keras(module: str) -> bool:
    return module == "keras" or module.startswith("keras.")


def _layer_classes(config: dict) -> list[str]:
    """Collect the class of the model and of every layer in a serialized config (recursively).

    A layer is an entry of a ``layers`` list or any object from a ``keras.layers`` module, wherever
    it sits (a ``Lambda`` hidden in an activation counts). Anything that names a non-Keras module,
    layer or not, is returned as ``module.class`` so that the allow-list refuses it too.
    """
    found = [str(config.get("class_name", "?"))]

    def walk(node, in_layers=False):
        if isinstance(node, dict):
            module = str(node.get("module") or "")
            if "class_name" in node:
                name = str(node["class_name"])
                if module and not _is_keras(module):
                    found.append(f"{module}.{name}")
                elif in_layers or module.startswith(("keras.layers", "keras.src.layers")):
                    found.append(name)
            for key, value in node.items():
                walk(value, in_layers=key == "layers")
        elif isinstance(node, list):
            for value in node:
                walk(value, in_layers=in_layers)

    walk(config)
    return found


def _as_config(obj, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise ModelError(
            f"{path} is not a Keras model file: its model config should be a JSON object, "
            f"received a JSON {type(obj).__name__}"
        )
    return obj


def read_model_config(path: str | Path) -> dict:
    """Read the architecture config of a ``.keras`` or ``.h5`` file without building the model.

    Raises:
        ModelError: the file is missing, empty, truncated, or not a Keras model file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}. Pass the path of a .keras or .h5 file")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"model file {path} is empty (0 bytes). Re-save the model or use another file")
    try:
        kind = container(path)
        if kind == "h5":
            import h5py

            with h5py.File(path, "r") as h5:
                raw = h5.attrs.get("model_config")
            if raw is None:
                raise ModelError(
                    f"{path} is an HDF5 file without a model config (weights only?). "
                    "Save the whole model with model.save('model.h5')"
                )
            if not isinstance(raw, str | bytes):
                raise ValueError(f"model_config attribute is {type(raw).__name__}, not text")
            if len(raw) > MAX_CONFIG_BYTES:
                raise ModelError(f"refusing to load {path}: its model config is {len(raw):,} bytes, "
                                 f"over mnistlab's limit of {MAX_CONFIG_BYTES >> 20} MiB")
            return _as_config(json.loads(raw), path)
        if kind == "zip":
            with zipfile.ZipFile(path) as z:
                check_zip_members(z, path)
                bad = verify_members(z, path)
                if bad is not None:
                    raise ModelError(f"{path} is corrupt (bad entry {shorten(bad)}). "
                                     "Re-save or re-download it")
                return _as_config(json.loads(read_member(z, "config.json", MAX_CONFIG_BYTES, path)),
                                  path)
    except ModelError:
        raise
    # What zipfile, zlib, h5py and json raise on damaged or hostile files.
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError, zlib.error,
            NotImplementedError, RecursionError) as e:
        raise ModelError(
            f"{path} is truncated or corrupt and cannot be read as a Keras model ({type(e).__name__}: "
            f"{shorten(str(e))}). Re-save the model or copy the file again"
        ) from None
    raise ModelError(
        f"{path} is not a Keras model file: expected a .keras (zip) or .h5 (HDF5) file, "
        f"received a file of {size:,} bytes that is neither"
    )


def check_layers(config: dict, path: str | Path) -> None:
    """Refuse models whose config uses layers outside ``ALLOWED_LAYERS``.

    Raises:
        ModelError: a Lambda or other code-carrying / unknown layer is present.
    """
    try:
        classes = _layer_classes(config)
    except RecursionError:
        raise ModelError(
            f"refusing to load {path}: its model config is nested too deeply to check"
        ) from None
    refused = sorted({c for c in classes if c not in ALLOWED_LAYERS})
    if refused:
        raise ModelError(
            f"refusing to load {path}: it contains layer(s) {shorten(', '.join(refused))}. mnistlab only loads "
            "plain layers (" + ", ".join(sorted(ALLOWED_LAYERS)) + "); Lambda and custom layers can "
            "run arbitrary code when a model is loaded or called. Rebuild the model without them"
        )


def check_model_file(path: str | Path, expected_sha256: str | None = None) -> None:
    """``load_model_file``'s checks without loading (Keras is not imported): the container, the
    sha256 if given, the layers. Raises ModelError as it does."""
    path = Path(path)
    config = read_model_config(path)
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise ModelError(
                f"{path} does not match the sha256 recorded in the run's manifest "
                f"(expected {expected_sha256[:16]}…, found {actual[:16]}…): the file was modified or "
                "damaged. Restore it, or retrain with `mnistlab rerun`"
            )
    check_layers(config, path)


def load_model_file(path: str | Path, expected_sha256: str | None = None):
    """Load a ``.keras``/``.h5`` model after integrity and safety checks.

    Args:
        path: the model file.
        expected_sha256: if given, the file must have this sha256 (from a run's manifest).

    Returns:
        The ``keras.Model``, loaded with ``safe_mode=True`` and ``compile=False``.

    Raises:
        ModelError: missing, truncated, modified, unsafe, or unreadable file.
    """
    path = Path(path)
    check_model_file(path, expected_sha256)
    import keras

    try:
        with without_tensorflow():
            return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # keras raises many types for bad files; we name the file and the cause
        root = e  # Keras wraps the real reason (e.g. its safe-mode refusal) in generic TypeErrors
        for _ in range(50):
            if (root.__cause__ or root.__context__) is None:
                break
            root = root.__cause__ or root.__context__
        raise ModelError(
            f"cannot load model {path}: {type(root).__name__}: {shorten(str(root), 400)}"
        ) from None
