"""Read a Keras model into a layer plan: the steps of its forward pass, in order.

One reader for both users: ``fit_fast`` trains a plan of Dense layers (``training_plan``: Flatten,
Dense and Dropout only, with the checks that training needs), and ``Predictor`` runs a plan of
Dense, normalisation and activation steps (``prediction_plan``: identity layers such as Dropout
or GaussianNoise dropped). ``read_layers`` classifies every layer once; each plan then refuses
what its user cannot run, in its own words.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mnistlab.errors import ModelError

IDENTITY_LAYERS = ("InputLayer", "Dropout", "AlphaDropout", "GaussianDropout", "GaussianNoise")
_EXTRAS = (
    "kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
    "bias_constraint",
)  # fmt: skip


@dataclass(frozen=True)
class Dense:
    """A Dense layer: ``activation(x @ kernel + bias)``.

    ``kernel`` ``(in, out)`` and ``bias`` ``(out,)`` are the Keras variables (read by training)
    or read-only float32 numpy arrays (``engine.forward``); ``bias`` may be None. ``dropout`` is
    the rate of a Dropout right before the layer, applied to its input while training.
    """

    name: str
    kernel: object
    bias: object | None
    activation: str  # the Keras name of a built-in activation, or "custom"
    fn: object  # the activation function itself
    dropout: float = 0.0
    layer: object = dataclasses.field(default=None, repr=False, compare=False)
    kind = "Dense"


@dataclass(frozen=True)
class Normalize:
    """A BatchNormalization at inference: ``x * scale + shift``, float32 ``(d,)`` each."""

    name: str
    scale: np.ndarray
    shift: np.ndarray
    kind = "BatchNormalization"


@dataclass(frozen=True)
class Activation:
    """An activation on its own (Activation, Softmax or ReLU layer)."""

    name: str
    kind: str  # Activation, Softmax or ReLU
    activation: str  # Keras name, or "custom"
    fn: object = None


@dataclass(frozen=True)
class Passive:
    """A layer that changes nothing at inference: Flatten, InputLayer, Dropout and noise."""

    name: str
    kind: str
    layer: object = dataclasses.field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Unsupported:
    """A layer no plan can run; ``reason`` completes "layer 'name' (Kind) ..."."""

    name: str
    kind: str
    reason: str


def activation_name(fn) -> str:
    """The Keras name of a built-in activation, or ``"custom"``.

    Not ``keras.activations.serialize``: it imports TensorFlow when installed (~400 MB of RSS).
    """
    import keras

    name = getattr(fn, "__name__", "")
    try:
        return name if keras.activations.get(name) is fn else "custom"
    except (ValueError, TypeError):
        return "custom"


def to_numpy(v) -> np.ndarray:
    """A Keras variable or backend tensor as a float32 numpy array."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32)


def read_layers(model) -> list:
    """Classify each of ``model.layers``, in order: ``Dense``, ``Normalize``, ``Activation``,
    ``Passive`` or ``Unsupported``.

    Raises:
        ModelError: the model has no layers.
    """
    layers = list(getattr(model, "layers", []))
    if not layers:
        raise ModelError("the model has no layers; build or load a trained model first")
    return [_read(layer) for layer in layers]


def _read(layer):
    kind = type(layer).__name__
    if kind in IDENTITY_LAYERS or kind == "Flatten":
        return Passive(layer.name, kind, layer)
    quant = getattr(getattr(layer, "dtype_policy", None), "quantization_mode", None)
    if quant:
        return Unsupported(layer.name, kind, f"is quantized ({quant}); refusing it")
    if kind == "Dense":
        name = activation_name(layer.activation)
        return Dense(layer.name, layer.kernel, layer.bias, name, layer.activation, layer=layer)
    if kind == "Activation":
        return Activation(layer.name, kind, activation_name(layer.activation), layer.activation)
    if kind == "Softmax":
        if layer.axis not in (-1, 1):
            return Unsupported(layer.name, kind, f"has axis {layer.axis}; only the last axis is "
                               "supported")
        return Activation(layer.name, kind, "softmax")
    if kind == "ReLU":
        cfg = layer.get_config()
        if cfg.get("max_value") is not None or cfg.get("negative_slope") or cfg.get("threshold"):
            return Unsupported(layer.name, kind, "is a leaky or capped ReLU; only plain ReLU is "
                               "supported")
        return Activation(layer.name, kind, "relu")
    if kind == "BatchNormalization":
        return _batch_norm(layer)
    return Unsupported(layer.name, kind, "is not supported")


def _batch_norm(layer):
    if layer.axis not in (-1, 1):
        return Unsupported(layer.name, "BatchNormalization",
                           f"normalises axis {layer.axis}; only the last axis works")
    mean, var = to_numpy(layer.moving_mean), to_numpy(layer.moving_variance)
    gamma = to_numpy(layer.gamma) if layer.scale else np.ones_like(mean)
    beta = to_numpy(layer.beta) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + np.float32(layer.epsilon))
    return Normalize(layer.name, scale, beta - mean * scale)


# --------------------------------------------------------------------------- prediction
def prediction_plan(model, flat_input: bool) -> list:
    """The steps of ``model``'s forward pass at inference: ``Dense``, ``Normalize`` and
    ``Activation``, identity layers left out. ``flat_input``: the model takes ``(N, D)`` rows
    (otherwise a Flatten must come before any other step).

    Raises:
        ModelError: an unsupported layer, or a layer before the Flatten.
    """
    steps, flattened = [], flat_input
    for step in read_layers(model):
        where = f"layer {step.name!r} ({step.kind})"
        if isinstance(step, Unsupported):
            if step.reason == "is not supported":
                raise ModelError(
                    f"{where} is not supported by the numpy predictor. Supported layers: "
                    "Flatten, Dense, Activation, Softmax, ReLU, BatchNormalization, Dropout (and "
                    "noise layers)"
                )
            raise ModelError(f"{where} {step.reason}")
        if isinstance(step, Passive):
            flattened = flattened or step.kind == "Flatten"
            continue
        if not flattened:
            raise ModelError(
                f"{where} comes before a Flatten layer; the numpy predictor needs flat input. "
                "Add a Flatten layer first"
            )
        steps.append(step)
    return steps


# --------------------------------------------------------------------------- training
def training_plan(model) -> list[Dense]:
    """Read a model of Flatten / Dense / Dropout layers into the Dense layers ``fit_fast`` trains,
    each with the rate of the Dropout before it.

    Raises:
        ModelError: the model is not built, has another kind of layer, regularizers, frozen or
            non-float32 layers, or an output layer that is not a softmax.
    """
    if not model.built:
        raise ModelError(
            "fit_fast needs a built model; call model.build(...) or pass an Input first"
        )
    plan: list[Dense] = []
    rate = 0.0
    for step in read_layers(model):
        if isinstance(step, Passive) and step.kind in ("Flatten", "InputLayer"):
            continue
        if isinstance(step, Passive) and step.kind == "Dropout":
            rate = _dropout_rate(step.layer, rate)
            continue
        if not isinstance(step, Dense):
            raise ModelError(
                "fit_fast trains Flatten + Dense (+ Dropout) models only; use loop='fit' for "
                f"others. Received layer {step.name!r} of type {step.kind}"
            )
        _check_trainable(step.layer)
        plan.append(dataclasses.replace(step, dropout=rate))
        rate = 0.0
    if not plan or plan[-1].activation != "softmax":
        got = plan[-1].activation if plan else "no Dense layer"
        raise ModelError(
            "fit_fast trains with categorical cross-entropy on a softmax output; the last Dense "
            f"layer must use activation='softmax'. Received {got}"
        )
    if rate:
        raise ModelError("a Dropout after the output layer has no effect in fit; remove it")
    if {id(v) for v in model.trainable_variables} != {id(v) for v in parameters(plan)}:
        raise ModelError(
            "the model has trainable variables outside its Dense layers; use loop='fit'"
        )
    return plan


def dense_layers(model) -> list[tuple]:
    """``(kernel, bias or None, activation)`` as numpy arrays per Dense layer of a model
    ``training_plan`` reads (what ``engine.forward.loop_probabilities`` takes)."""
    return [(to_numpy(d.kernel), None if d.bias is None else to_numpy(d.bias), d.activation)
            for d in training_plan(model)]


def parameters(plan: list[Dense]) -> list:
    """The plan's kernels and biases in order (kernel, bias, kernel, ...; no None)."""
    return [v for d in plan for v in (d.kernel, d.bias) if v is not None]


def _dropout_rate(layer, pending: float) -> float:
    if pending:
        raise ModelError(
            "fit_fast supports one Dropout between two Dense layers; merge them into one. "
            f"Received two in a row before layer {layer.name!r}"
        )
    if layer.noise_shape is not None:
        raise ModelError(f"Dropout noise_shape is not supported; received {layer.noise_shape}")
    return float(layer.rate)


def _check_trainable(layer) -> None:
    extras = [n for n in _EXTRAS if getattr(layer, n, None) is not None]
    if extras or getattr(layer, "lora_enabled", False):
        raise ModelError(
            f"layer {layer.name!r} uses {extras or 'LoRA'}, which fit_fast does not apply; "
            "use loop='fit'"
        )
    if not layer.trainable or layer.kernel.dtype != "float32":
        raise ModelError(
            f"fit_fast trains float32, trainable Dense layers; layer {layer.name!r} has "
            f"trainable={layer.trainable}, dtype={layer.kernel.dtype}. Use loop='fit'"
        )


# --------------------------------------------------------------------------- arrays
def plan_to_arrays(steps) -> dict[str, np.ndarray]:
    """A prediction plan as plain arrays for ``np.savez`` (strings as unicode arrays, no pickles).

    Args:
        steps: ``Dense``, ``Normalize`` and ``Activation`` steps whose weights are numpy arrays
            (``engine.forward.Network.steps``).

    Returns:
        ``kinds``, ``names``, ``activations`` (one per step; ``""`` for a normalisation), and per
        step ``i``: ``kernel_i`` float32 ``(in, out)`` and ``bias_i`` ``(out,)`` (absent when the
        layer has no bias) for a Dense, ``scale_i`` and ``shift_i`` ``(d,)`` for a Normalize.
    """
    arrays = {
        "kinds": np.array([s.kind for s in steps], dtype=str),
        "names": np.array([s.name for s in steps], dtype=str),
        "activations": np.array([getattr(s, "activation", "") for s in steps], dtype=str),
    }
    for i, s in enumerate(steps):
        if isinstance(s, Dense):
            arrays[f"kernel_{i}"] = np.asarray(s.kernel, np.float32)
            if s.bias is not None:
                arrays[f"bias_{i}"] = np.asarray(s.bias, np.float32)
        elif isinstance(s, Normalize):
            arrays[f"scale_{i}"], arrays[f"shift_{i}"] = s.scale, s.shift
    return arrays


def plan_from_arrays(arrays) -> list:
    """The steps ``plan_to_arrays`` wrote, read back (``arrays``: a mapping such as an NpzFile).

    Raises:
        ModelError: an unknown step kind or a missing array.
    """
    try:
        kinds, names, acts = (list(map(str, arrays[k])) for k in ("kinds", "names", "activations"))
        steps = []
        for i, (kind, name, act) in enumerate(zip(kinds, names, acts, strict=True)):
            if kind == "Dense":
                bias = arrays.get(f"bias_{i}")
                steps.append(Dense(name, arrays[f"kernel_{i}"], bias, act, act))
            elif kind == "BatchNormalization":
                steps.append(Normalize(name, arrays[f"scale_{i}"], arrays[f"shift_{i}"]))
            elif kind in ("Activation", "Softmax", "ReLU"):
                steps.append(Activation(name, kind, act, act))
            else:
                raise ModelError(f"unknown step kind {kind!r} (step {i}, {name!r})")
    except (KeyError, ValueError) as e:
        raise ModelError(f"the saved plan is incomplete or malformed: {e}") from None
    return steps
