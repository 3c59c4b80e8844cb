"""Test-set metrics: loss, accuracy, per-class precision/recall/F1, confusion matrix.

Training and ``mnistlab evaluate`` compute the probabilities the same way (Keras' ``predict``, or
for a run the compiled loop trained its forward pass: ``mnistlab.finish``), so a run evaluated
later gives exactly the figures training recorded.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from mnistlab.engine.loss import EPSILON
from mnistlab.model import to_input

LOOP = "compiled loop"  # metrics.json "probabilities": the compiled loop's forward pass gave them


def predict_proba(model, images: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Return class probabilities.

    Args:
        model: a Keras model taking float32 ``(N, H, W)`` in [0, 1].
        images: uint8 ``(N, H, W)``, 0-255.

    Returns:
        float32 ``(N, C)``.
    """
    return np.asarray(model.predict(to_input(images), batch_size=batch_size, verbose=0), np.float32)


def compute_metrics(probs: np.ndarray, labels: np.ndarray, class_names) -> tuple[dict, str]:
    """Compute the test metrics from probabilities.

    Args:
        probs: float ``(N, C)`` class probabilities.
        labels: int ``(N,)`` true labels.
        class_names: ``C`` names, index = label.

    Returns:
        ``(metrics, report_text)``: a JSON-ready dict (see README, metrics.json) and the text of
        sklearn's ``classification_report(..., digits=4, zero_division=0)``, computed here with
        the same formulas and layout (importing sklearn costs ~1 s of every run).
    """
    labels = np.asarray(labels, dtype=np.int64)
    c = len(class_names)
    p = np.clip(probs[np.arange(len(labels)), labels].astype(np.float64), EPSILON, 1.0 - EPSILON)
    predicted = probs.argmax(axis=1).astype(np.int64)
    names = [str(n) for n in class_names]
    matrix = np.bincount(labels * c + predicted, minlength=c * c).reshape(c, c)
    per_class, averages = _scores(matrix)
    metrics = {
        "test_loss": float(-np.log(p).mean()),
        "test_accuracy": float((predicted == labels).mean()),
        "n_test": int(len(labels)),
        "num_classes": c,
        "class_names": names,
        "per_class": {str(i): per_class[i] for i in range(c)},
        "macro_avg": averages["macro avg"],
        "weighted_avg": averages["weighted avg"],
        "confusion_matrix": matrix.tolist(),
    }
    return metrics, _report_text(names, per_class, averages)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, 0 where ``den`` is 0 (sklearn's ``zero_division=0``)."""
    zero = den == 0
    out = num / np.where(zero, 1, den)
    out[zero] = 0.0
    return out


def _scores(matrix: np.ndarray) -> tuple[list[dict], dict]:
    """Per-class precision, recall, F1 and support from a confusion matrix (rows: true labels),
    and the accuracy, macro and weighted averages, as sklearn computes them."""
    tp, predicted, true = np.diag(matrix), matrix.sum(0), matrix.sum(1)
    precision, recall = _divide(tp, predicted), _divide(tp, true)
    f1 = _divide(2.0 * tp, 1.0 * true + predicted)
    rows = [{"precision": float(a), "recall": float(b), "f1": float(f), "support": int(s)}
            for a, b, f, s in zip(precision, recall, f1, true, strict=True)]
    n = int(true.sum())
    averages = {
        "accuracy": {"f1": float(2.0 * tp.sum() / (2 * n)) if n else 0.0, "support": n},
        "macro avg": {"precision": float(np.average(precision)),
                      "recall": float(np.average(recall)), "f1": float(np.average(f1)),
                      "support": n},
        "weighted avg": {"precision": float(np.average(precision, weights=true)),
                         "recall": float(np.average(recall, weights=true)),
                         "f1": float(np.average(f1, weights=true)), "support": n},
    }
    return rows, averages


def _report_text(names: list[str], rows: list[dict], averages: dict, digits: int = 4) -> str:
    """sklearn's ``classification_report`` layout."""
    width = max(max(len(n) for n in names), len("weighted avg"), digits)
    head = "{:>{width}s} " + " {:>9}" * 4
    line = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    text = head.format("", "precision", "recall", "f1-score", "support", width=width) + "\n\n"
    for name, r in zip(names, rows, strict=True):
        text += line.format(name, r["precision"], r["recall"], r["f1"], r["support"],
                            width=width, digits=digits)
    text += "\n"
    acc = averages["accuracy"]
    text += ("{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n").format(
        "accuracy", "", "", acc["f1"], acc["support"], width=width, digits=digits)
    for name in ("macro avg", "weighted avg"):
        a = averages[name]
        text += line.format(name, a["precision"], a["recall"], a["f1"], a["support"],
                            width=width, digits=digits)
    return text


def evaluate_model(model, images: np.ndarray, labels: np.ndarray, class_names):
    """Predict and score a model on uint8 images (Keras' ``predict``).

    Returns:
        ``(metrics, report_text, probs)`` with probs float32 ``(N, C)``.
    """
    probs = predict_proba(model, images)
    metrics, text = compute_metrics(probs, labels, class_names)
    metrics["probabilities"] = "keras"
    return metrics, text, probs


def evaluate(run: str | Path | None = None, *, model_path=None, dataset=None, data_path=None):
    """Evaluate a run's model (or a plain Keras model file) on a dataset's test part.

    Args:
        run: a run (a ``Run`` or its directory); its dataset is used unless ``dataset``/``data_path`` is given.
        model_path: a ``.keras``/``.h5`` file saved by any Keras code (needs ``dataset`` or
            ``data_path``, or ``run``).
        dataset: a dataset name; data_path: a user's own data.

    Returns:
        ``(metrics, report_text)``.

    Raises:
        RunError, ModelError, DataError: with the fix in the message.
    """
    from mnistlab.data import load_dataset
    from mnistlab.errors import ConfigError, ModelError
    from mnistlab.modelfile import load_model_file
    from mnistlab.runs import as_run

    # Arguments first, then the data (numpy), then the model (Keras: seconds to import).
    r = cfg = None
    if run is not None:
        r = as_run(run)
        cfg = r.config
        if not model_path:
            r.check_files()
    elif model_path is None:
        raise ConfigError("give a run directory or --model PATH to evaluate")
    if model_path and not Path(model_path).is_file():
        raise ModelError(f"model file not found: {model_path}. Pass the path of a .keras or .h5 file")
    if dataset is None and data_path is None:
        if cfg is None:
            raise ConfigError("evaluating a model file needs --dataset NAME or --data PATH")
        dataset, data_path = cfg.data.dataset, cfg.data.path
    mirrors = cfg.data.mirrors if cfg else ()
    ds = load_dataset(dataset or "mnist", path=data_path, mirrors=mirrors)
    on_loop = not model_path and (r.metrics or {}).get("probabilities") == LOOP
    if on_loop:  # as training computed them (``mnistlab.finish``): the same figures, bit for bit
        done = _evaluate_predictor_on_loop(r, ds)  # from predictor.npz: no Keras import
        if done is not None:
            return done
    model = load_model_file(model_path) if model_path else r.load_model()
    check_model_fits(model, ds.image_shape, ds.num_classes)
    if on_loop:
        from mnistlab.engine.plan import dense_layers

        with contextlib.suppress(ImportError):  # else Keras' predict, and the metrics say so
            return evaluate_layers(dense_layers(model), ds.x_test, ds.y_test, ds.class_names)[:2]
    metrics, text, _ = evaluate_model(model, ds.x_test, ds.y_test, ds.class_names)
    return metrics, text


def _evaluate_predictor_on_loop(run, ds) -> tuple[dict, str] | None:
    """``evaluate_layers`` from the run's ``predictor.npz`` (the trained arrays, its sha256
    checked), or None: no such file, a network that is not a plain Dense chain, or no numba."""
    from mnistlab.engine.plan import Dense
    from mnistlab.errors import DataError
    from mnistlab.inference import Predictor
    from mnistlab.runs import PREDICTOR_FILE

    if PREDICTOR_FILE not in run.manifest.get("files", {}):
        return None
    run.check_model()  # a damaged or changed model.keras is reported, as loading it would
    network = Predictor._from_run_file(run).network
    if not all(isinstance(s, Dense) for s in network.steps):
        return None
    n_in = int(np.prod(ds.image_shape))
    if network.input_dim != n_in or network.output_dim != ds.num_classes:
        raise DataError(
            f"the run's model takes {network.input_dim} pixels and gives {network.output_dim} "
            f"probabilities, but the data has images of shape {tuple(ds.image_shape)} ({n_in} "
            f"pixels) and {ds.num_classes} classes. Evaluate on the dataset the model was "
            "trained on"
        )
    layers = [(s.kernel, s.bias, s.activation) for s in network.steps]
    try:
        return evaluate_layers(layers, ds.x_test, ds.y_test, ds.class_names)[:2]
    except ImportError:
        return None


def evaluate_layers(layers, images: np.ndarray, labels: np.ndarray, class_names):
    """``evaluate_model`` on the compiled training loop's forward pass instead of Keras'
    ``predict`` (``engine.forward.loop_probabilities``): Dense layers ``(kernel, bias,
    activation)``. Returns ``(metrics, report_text, probs)``, ``metrics["probabilities"]`` set.

    Raises:
        ImportError: no numba or OpenBLAS here.
    """
    from mnistlab.engine.forward import loop_probabilities

    probs = loop_probabilities(layers, to_input(images).reshape(len(images), -1))
    metrics, text = compute_metrics(probs, labels, class_names)
    metrics["probabilities"] = LOOP
    return metrics, text, probs


def check_model_fits(model, image_shape, num_classes: int) -> None:
    """Raise ``DataError`` unless the model takes these images and gives one probability per class.

    Checked before predicting, so a model with 5 outputs evaluated on 10 classes (or with two
    output tensors) is a clear error instead of an IndexError deep in the metrics.
    """
    from mnistlab.errors import DataError

    inputs = getattr(model, "inputs", None) or []
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise DataError(
            f"the model has {len(inputs)} input(s) and {len(outputs)} output(s); mnistlab evaluates "
            "models with one image input and one probability output. Received a model named "
            f"{model.name!r}"
        )
    expected = tuple(model.input_shape[1:])
    if tuple(int(s) for s in expected if s is not None) != tuple(image_shape):
        raise DataError(
            f"the model expects images of shape {expected} but the data has {tuple(image_shape)}. "
            "Evaluate on the dataset the model was trained on"
        )
    out = tuple(model.output_shape[1:])
    if len(out) != 1 or out[0] != num_classes:
        raise DataError(
            f"the model gives outputs of shape {out} but the data has {num_classes} classes, so "
            f"it needs exactly {num_classes} outputs (one probability per class). Evaluate on the "
            "dataset the model was trained on"
        )
