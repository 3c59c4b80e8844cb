"""The tutorial's MLP: Flatten -> Dense(100) -> Dense(64) -> Dense(32) -> Dense(10, softmax).

Built with the Sequential or the functional API from a ``ModelConfig``; with the same seed both give
the same layers, names and weights (each layer's initialiser gets its own fixed seed).
"""

from __future__ import annotations

from mnistlab.config import ModelConfig, TrainConfig

TUTORIAL_PARAMS = 87_374


def _layers(cfg: ModelConfig, num_classes: int, seed: int) -> list:
    import keras

    layers = [keras.layers.Flatten(name="flatten")]
    for i, units in enumerate(cfg.hidden, start=1):
        layers.append(
            keras.layers.Dense(
                units,
                activation=cfg.activation,
                name=f"dense{i}",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
            )
        )
        if cfg.dropout > 0:
            layers.append(keras.layers.Dropout(cfg.dropout, seed=seed + 100 + i, name=f"dropout{i}"))
    layers.append(
        keras.layers.Dense(
            num_classes,
            activation="softmax",
            name="output",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        )
    )
    return layers


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int = 10, seed: int = 111):
    """Build the MLP (not compiled).

    Args:
        cfg: architecture (``api``, ``hidden``, ``activation``, ``dropout``).
        input_shape: image shape without the batch axis, e.g. ``(28, 28)`` or ``(8, 8)``.
        num_classes: size of the softmax output.
        seed: fixes every layer's initial weights.

    Returns:
        A built ``keras.Model`` taking float32 ``(batch, *input_shape)`` in [0, 1] and returning
        float32 probabilities ``(batch, num_classes)``.
    """
    import keras

    name = "mnist_mlp"
    layers = _layers(cfg, num_classes, seed)
    if cfg.api == "sequential":
        return keras.Sequential([keras.Input(shape=tuple(input_shape)), *layers], name=name)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def build_optimizer(cfg: TrainConfig):
    """Return a fresh Keras optimizer for ``cfg`` (SGD, Adam or RMSprop with its parameters)."""
    import keras

    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(cfg.learning_rate, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(
            cfg.learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon
        )
    return keras.optimizers.RMSprop(
        cfg.learning_rate, rho=cfg.rho, momentum=cfg.momentum, epsilon=cfg.epsilon
    )


def compile_model(model, cfg: TrainConfig):
    """Compile with the configured optimizer, categorical cross-entropy and accuracy."""
    model.compile(
        optimizer=build_optimizer(cfg), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def summary_text(model) -> str:
    """Return ``model.summary()`` as plain text (no terminal colours)."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines)


def to_input(images, out=None):
    """Scale uint8 images 0-255 to the model's float32 input in [0, 1].

    The one conversion every path uses (the fast loop applies it per batch to uint8 data).

    Args:
        images: uint8 array ``(N, H, W)`` (or anything castable), values 0-255.
        out: optional float32 array of the same shape to write into.

    Returns:
        float32 array of the same shape, values in [0, 1].
    """
    import numpy as np

    return np.multiply(images, np.float32(1.0 / 255.0), out=out, dtype=np.float32)
