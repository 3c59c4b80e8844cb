"""The models: the tutorial's MLP and the convnet of the next chapter.

* ``kind = "mlp"``: Flatten -> Dense(100) -> Dense(64) -> Dense(32) -> Dense(10, softmax).
* ``kind = "cnn"``: Reshape to one channel -> for each conv block Conv2D (+ BatchNormalization)
  + activation (+ MaxPooling2D) -> Flatten -> Dropout -> Dense... -> Dense(10, softmax). The
  ``cnn`` preset is the keras-io ``mnist_convnet`` (34,826 parameters).

Built with the Sequential or the functional API from a ``ModelConfig``; with the same seed both give
the same layers, names and weights (each layer's initialiser gets its own fixed seed).
"""

from __future__ import annotations

from mnistlab.config import ModelConfig, TrainConfig

TUTORIAL_PARAMS = 87_374
KERAS_IO_CONVNET_PARAMS = 34_826


def _conv_layers(cfg: ModelConfig, input_shape: tuple[int, ...], seed: int) -> list:
    """Reshape + the conv blocks, checking the image stays at least 1x1 through them."""
    import keras

    from mnistlab.errors import ConfigError

    h, w = input_shape[:2]
    layers = [keras.layers.Reshape((h, w, 1), name="reshape")] if len(input_shape) == 2 else []
    for i, block in enumerate(cfg.conv, start=1):
        layers.append(keras.layers.Conv2D(
            block.filters, block.kernel, padding=block.padding, name=f"conv{i}",
            activation=None if block.batch_norm else cfg.activation,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 200 + i)))
        if block.batch_norm:
            layers += [keras.layers.BatchNormalization(momentum=cfg.batch_norm_momentum,
                                                       name=f"batchnorm{i}"),
                       keras.layers.Activation(cfg.activation, name=f"activation{i}")]
        if block.padding == "valid":
            h, w = h - block.kernel + 1, w - block.kernel + 1
        if block.pool > 1:
            layers.append(keras.layers.MaxPooling2D(block.pool, name=f"pool{i}"))
            h, w = h // block.pool, w // block.pool
        if h < 1 or w < 1:
            raise ConfigError(
                f"the {input_shape[0]}x{input_shape[1]} images shrink to nothing after conv block "
                f"{i} of model.conv; use padding = \"same\", smaller kernels, pool = 1 or fewer "
                "blocks for images this small"
            )
    return layers


def _layers(cfg: ModelConfig, num_classes: int, seed: int, input_shape=(28, 28)) -> list:
    import keras

    cnn = cfg.kind == "cnn"
    layers = _conv_layers(cfg, tuple(input_shape), seed) if cnn else []
    layers.append(keras.layers.Flatten(name="flatten"))
    if cnn and cfg.dropout > 0:
        layers.append(keras.layers.Dropout(cfg.dropout, seed=seed + 100, name="dropout"))
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


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int = 10, seed: int = 111,
                precision: str = "float32"):
    """Build the MLP or the convnet (not compiled).

    Args:
        cfg: architecture (``kind``, ``api``, ``hidden``, ``activation``, ``dropout``, ``conv``).
        input_shape: image shape without the batch axis, e.g. ``(28, 28)`` or ``(8, 8)``.
        num_classes: size of the softmax output.
        seed: fixes every layer's initial weights.
        precision: ``"float32"``, or ``"mixed_bfloat16"``: every layer but the softmax output
            computes in bfloat16 with float32 weights (Keras' mixed-precision policy, per layer).

    Returns:
        A built ``keras.Model`` taking float32 ``(batch, *input_shape)`` in [0, 1] and returning
        float32 probabilities ``(batch, num_classes)``.

    Raises:
        ConfigError: the conv blocks shrink the images to nothing.
    """
    import keras

    name = "mnist_cnn" if cfg.kind == "cnn" else "mnist_mlp"
    layers = _layers(cfg, num_classes, seed, input_shape)
    if precision != "float32":
        for layer in layers[:-1]:  # the softmax and the loss stay float32
            layer.dtype_policy = keras.dtype_policies.get(precision)
    if cfg.api == "sequential":
        # Named, as the functional model's is: Keras' default name counts the inputs this
        # process made before ("input_layer_3"), and the saved config would carry it.
        return keras.Sequential([keras.Input(shape=tuple(input_shape), name="image"), *layers],
                                name=name)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def build_optimizer(cfg: TrainConfig, steps_per_epoch: int | None = None):
    """Return a fresh Keras optimizer for ``cfg`` (SGD, Adam or RMSprop with its parameters).

    ``schedule = "cosine"`` decays the learning rate to 0 over ``epochs * steps_per_epoch`` steps
    (keyed to the optimizer's own step count, so resuming continues the curve).

    Raises:
        ConfigError: a schedule is set but ``steps_per_epoch`` is not given.
    """
    import keras

    lr = cfg.learning_rate
    if cfg.schedule == "cosine":
        if not steps_per_epoch:
            from mnistlab.errors import ConfigError

            raise ConfigError("train.schedule = \"cosine\" needs the number of steps per epoch")
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=cfg.epochs * steps_per_epoch)
    # Named: Keras' default name counts the optimizers this process made ("sgd_1"), and the
    # saved files would carry it.
    name = cfg.optimizer
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov, name=name)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon,
                                     name=name)
    return keras.optimizers.RMSprop(lr, rho=cfg.rho, momentum=cfg.momentum, epsilon=cfg.epsilon,
                                    name=name)


def compile_model(model, cfg: TrainConfig, steps_per_epoch: int | None = None):
    """Compile with the configured optimizer, categorical cross-entropy (with the configured
    label smoothing) and accuracy. ``steps_per_epoch`` is needed by a learning-rate schedule."""
    import keras

    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
            if cfg.label_smoothing else "categorical_crossentropy")
    model.compile(optimizer=build_optimizer(cfg, steps_per_epoch), loss=loss, metrics=["accuracy"])
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
