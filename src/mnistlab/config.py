"""Run configuration: validated models, presets, TOML files and ``--set`` overrides.

A configuration is data. It is built in this order, each step overriding the one before:
preset -> ``--config`` TOML file -> ``--set section.key=value`` overrides -> CLI flags.
The fully resolved configuration is saved with every run as ``config.toml``.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mnistlab.errors import ConfigError, shorten, shorten_repr

MAX_EPOCHS = 10_000
MAX_BATCH = 1_000_000
MAX_UNITS = 65_536


class _Section(BaseModel):
    # strict: TOML and --set values arrive typed, so `true` must not pass as 1 epoch
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class DataConfig(_Section):
    dataset: str = Field("mnist", description="mnist, fashion_mnist, digits or mnist_sample")
    path: str | None = Field(None, description="a .npz, IDX directory or image folder (overrides dataset)")
    val_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="share of training data held out")
    stratify: bool = Field(False, description="keep class proportions in the validation split")
    mirrors: list[str] = Field(default_factory=list, description="extra download origins, tried first")


class ConvBlock(_Section):
    """One convolution block: Conv2D (+ BatchNormalization) + activation (+ MaxPooling2D)."""

    filters: int = Field(32, ge=1, le=1024, description="output channels")
    kernel: int = Field(3, ge=1, le=7, description="square kernel size")
    padding: Literal["valid", "same"] = "valid"
    pool: int = Field(2, ge=1, le=4, description="max-pooling size after the block; 1 = none")
    batch_norm: bool = Field(False, description="BatchNormalization between conv and activation")


def _keras_io_blocks() -> list[ConvBlock]:
    return [ConvBlock(filters=32), ConvBlock(filters=64)]


class ModelConfig(_Section):
    kind: Literal["mlp", "cnn"] = Field("mlp", description="mlp: Flatten + Dense; cnn: conv blocks first")
    api: Literal["sequential", "functional"] = "sequential"
    hidden: list[int] = Field(default_factory=lambda: [100, 64, 32], max_length=16,
                              description="Dense units before the output (cnn: after Flatten)")
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "elu", "selu", "silu"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0,
                           description="mlp: after each hidden Dense; cnn: after Flatten and each Dense")
    conv: list[ConvBlock] = Field(default_factory=_keras_io_blocks, max_length=8,
                                  description="cnn only: the convolution blocks, in order")
    batch_norm_momentum: float = Field(
        0.99, gt=0.0, lt=1.0, description="of BatchNormalization's moving statistics (Keras' "
        "default 0.99 lags for a few hundred steps: use 0.9 on small datasets)")

    @model_validator(mode="after")
    def _sizes(self):
        bad = [h for h in self.hidden if not 1 <= h <= MAX_UNITS]
        if bad:
            raise ValueError(f"hidden layer sizes must be between 1 and {MAX_UNITS}; received {bad}")
        if self.kind == "mlp" and not self.hidden:
            raise ValueError("an mlp needs at least one hidden layer (model.hidden = [100, 64, 32])")
        if self.kind == "cnn" and not self.conv:
            raise ValueError("a cnn needs at least one conv block (model.conv = [{filters = 32}])")
        return self


class TrainConfig(_Section):
    epochs: int = Field(50, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    optimizer: Literal["sgd", "adam", "rmsprop"] = "sgd"
    learning_rate: float = Field(0.01, gt=0.0, le=10.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd and rmsprop")
    nesterov: bool = Field(False, description="sgd only")
    beta_1: float = Field(0.9, gt=0.0, lt=1.0, description="adam only")
    beta_2: float = Field(0.999, gt=0.0, lt=1.0, description="adam only")
    rho: float = Field(0.9, gt=0.0, lt=1.0, description="rmsprop only")
    epsilon: float = Field(1e-7, gt=0.0, le=1.0, description="adam and rmsprop")
    early_stopping: int = Field(0, ge=0, le=MAX_EPOCHS, description="patience in epochs; 0 = off")
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    shuffle: bool = Field(True, description="reshuffle the training set every epoch (seeded)")
    loop: Literal["fast", "fit"] = Field(
        "fast", description="fast: mnistlab.engine (compiled or numpy SGD, jitted JAX scan otherwise); fit: keras Model.fit"
    )
    devices: str = Field("1", description="number of devices for data-parallel training, or 'all'")
    precision: Literal["float32", "mixed_bfloat16"] = Field(
        "float32", description="mixed_bfloat16: bfloat16 compute, float32 weights (convnets on "
        "CPUs with AMX/AVX512-BF16)")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate: constant, or cosine decay to 0 over all steps")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="of the cross-entropy targets")

    @field_validator("devices", mode="before")
    @classmethod
    def _devices_as_text(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class AugmentConfig(_Section):
    """On-the-fly augmentation of the training images (``mnistlab.augment``); all 0: off."""

    shift: float = Field(0.0, ge=0.0, le=0.5, description="largest shift, as a fraction of the size")
    rotation: float = Field(0.0, ge=0.0, le=180.0, description="largest rotation in degrees")
    zoom: float = Field(0.0, ge=0.0, le=0.5, description="largest zoom in or out, as a fraction")
    flip: bool = Field(False, description="mirror half the images left-right (clothes, not digits)")
    erase: float = Field(0.0, ge=0.0, le=1.0, description="share of images with a random rectangle "
                         "(2-25 % of the area) blanked to black: random erasing")

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.rotation or self.zoom or self.flip or self.erase)


class ReportConfig(_Section):
    enabled: bool = True


class Config(_Section):
    preset: str = "tutorial"
    seed: int = Field(111, ge=0, le=2**31 - 1, description="fixes split, initialisation, shuffling")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)


PRESETS: dict[str, dict] = {
    # The tutorial exactly: 30 % validation with random_state=111, SGD lr 0.01, 50 epochs, batch 128.
    "tutorial": {},
    # A usable model in seconds: the tutorial's MLP with Adam (lr 3e-3) for 5 epochs (measured on
    # mnist_sample: test accuracy 0.902-0.916 over seeds 1, 2, 111; the tutorial's SGD gets 0.37).
    "quick": {"train": {"epochs": 5, "optimizer": "adam", "learning_rate": 0.003}},
    # The same network with Adam, which converges in far fewer epochs.
    "adam": {"train": {"optimizer": "adam", "learning_rate": 0.001, "epochs": 20}},
    # The keras-io convnet (examples/vision/mnist_convnet.py) exactly: two conv blocks (32, 64
    # filters, 3x3, max-pool 2), Flatten, Dropout 0.5, softmax; Adam 1e-3, batch 128, 15 epochs,
    # 10 % validation.
    "cnn": {
        "data": {"val_fraction": 0.1},
        "model": {"kind": "cnn", "hidden": [], "dropout": 0.5},
        "train": {"optimizer": "adam", "learning_rate": 0.001, "epochs": 15},
    },
    # The most accuracy measured on 2 CPU cores in 10 minutes (README, "Convnets"): three conv
    # blocks, Dense 256 with light dropout, Adam with a cosine decay, light label smoothing and
    # seeded small shifts (no flips, which would confuse digits), 5 % held out for validation (the
    # rest trains: 0.9354 on Fashion-MNIST against 0.9326 with 10 %), 26 epochs since the conv
    # engine's Winograd convolutions (0.9385 in 6 min 49 s, 0.9364 / 0.9369 with seeds 111 / 1
    # in 7 min 43 s after the engine's later changes; 18 epochs gave 0.9333 in 5 min). No batch
    # normalisation: without it mnistlab's conv engine trains the net, 18 epochs in less time
    # than TensorFlow took for 13 with it.
    "best": {
        "data": {"val_fraction": 0.05},
        "model": {
            "kind": "cnn", "hidden": [256], "dropout": 0.1,
            "conv": [{"filters": 32, "padding": "same"},
                     {"filters": 64, "padding": "same"},
                     {"filters": 128, "padding": "same"}],
        },
        "train": {"optimizer": "adam", "learning_rate": 0.002, "epochs": 26,
                  "schedule": "cosine", "label_smoothing": 0.05},
        "augment": {"shift": 0.05},
    },
}


def valid_keys() -> list[str]:
    """Return every settable key as ``section.key`` (or ``key`` at the top level)."""
    keys = []
    for name, field in Config.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys += [f"{name}.{k}" for k in sub.model_fields]
        else:
            keys.append(name)
    return keys


def _format_validation(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{shorten(loc)}'. Valid keys: {', '.join(valid_keys())}")
        else:
            got = e.get("input")
            lines.append(f"{shorten(loc)}: {shorten(e['msg'], 300)} (received {shorten_repr(got)})")
    return f"invalid configuration from {source}: " + "; ".join(lines)


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """Turn ``section.key=value`` into a nested dict; the value is read as TOML, else a string.

    Raises:
        ConfigError: the text has no ``=`` or names a key that does not exist.
    """
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, e.g. train.epochs=3; received {shorten_repr(text)}")
    key, raw = (s.strip() for s in text.split("=", 1))
    if key not in valid_keys():
        raise ConfigError(f"unknown key '{shorten(key)}' in --set. Valid keys: {', '.join(valid_keys())}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


MAX_CONFIG_FILE = 16 << 20  # a complete config.toml is under 1 KB; this only stops runaway reads


def _read_capped(path: Path) -> bytes:
    """Read a regular file of at most ``MAX_CONFIG_FILE`` bytes (not a folder, device or pipe)."""
    import stat

    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device or pipe?)"
        raise ConfigError(f"config file {shorten(str(path))} is {what}. Pass a .toml file")
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_FILE + 1)
    if len(data) > MAX_CONFIG_FILE:
        raise ConfigError(f"config file {shorten(str(path))} is over {MAX_CONFIG_FILE:,} bytes (a "
                          "config is a few hundred bytes). Pass the right file")
    return data


def read_toml(path: str | Path) -> dict:
    """Read a TOML file into a dict.

    Raises:
        ConfigError: the file is missing or not valid TOML.
    """
    path = Path(path)
    try:
        return tomllib.loads(_read_capped(path).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {shorten(str(path))}. Pass an existing .toml file"
                          ) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {shorten(str(path))} ({e.strerror or e}). Pass a "
                          "readable .toml file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {shorten(str(e), 300)}. Fix the file and retry") from None


def load_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **flags,
) -> Config:
    """Build a validated configuration.

    Args:
        preset: a name from ``PRESETS`` (default: the file's ``preset`` key, else ``tutorial``).
        file: a TOML file with the same sections as ``config.toml``.
        overrides: ``section.key=value`` strings.
        **flags: ``section__key=value`` pairs from CLI flags; ``None`` values are ignored.

    Returns:
        The resolved ``Config``.

    Raises:
        ConfigError: unknown preset or key, or a value of the wrong type or out of range.
    """
    from_file = read_toml(file) if file else {}
    parsed = [parse_override(text) for text in overrides]
    # `--set preset=NAME` chooses the preset (its values apply), like --preset.
    named = [p.pop("preset") for p in parsed if "preset" in p]
    name = preset or (named[-1] if named else None) or from_file.get("preset") or "tutorial"
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"unknown preset {shorten_repr(name)}. Valid presets: {', '.join(PRESETS)}")
    data = _merge(PRESETS[name], from_file)
    data["preset"] = name
    for override in parsed:
        data = _merge(data, override)
    for key, value in flags.items():
        if value is None:
            continue
        section, _, field = key.partition("__")
        data = _merge(data, {section: {field: value}} if field else {section: value})
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        source = str(file) if file else f"preset {name!r} with the given overrides"
        raise ConfigError(_format_validation(e, source)) from None


def to_toml(config: Config) -> str:
    """Serialise a configuration as TOML (``None`` values are left out)."""
    import tomli_w

    return tomli_w.dumps(config.model_dump(exclude_none=True))


def resolve_data_path(config: Config) -> tuple[Config, str | None]:
    """Make ``data.path`` absolute, so a run's ``config.toml`` works from any folder.

    Returns:
        ``(config with the resolved path, the path as given)``; the given path is ``None`` when
        the config has no ``data.path``.
    """
    given = config.data.path
    if not given:
        return config, None
    resolved = str(Path(given).expanduser().resolve())
    data = config.data.model_copy(update={"path": resolved})
    return config.model_copy(update={"data": data}), given


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# In a run's name already (dataset, seed) or not a setting of the experiment.
_NOT_IN_LABEL = {"preset", "seed", "data.dataset", "data.path", "data.mirrors", "report.enabled"}


def differences(config: Config) -> dict:
    """The settings in which ``config`` differs from its preset, as ``{"section.key": value}``.

    The dataset, its path and the seed are left out (a run's name has them already).
    """
    base = load_config(config.preset if config.preset in PRESETS else "tutorial")
    mine, theirs = _flat(config.model_dump()), _flat(base.model_dump())
    return {k: v for k, v in mine.items() if k not in _NOT_IN_LABEL and theirs.get(k) != v}


def label(config: Config, limit: int = 48) -> str:
    """A short name for the experiment: the preset, then what differs from it.

    E.g. ``tutorial`` or ``tutorial+optimizer=adam+learning_rate=0.001``; past ``limit``
    characters the differences are cut and a short hash of all of them keeps names apart.
    """
    import hashlib

    diff = differences(config)
    text = config.preset + "".join(f"+{k.split('.')[-1]}={_short(v)}" for k, v in diff.items())
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(repr(sorted(diff.items())).encode()).hexdigest()[:6]
    return f"{text[: limit - 7]}~{digest}"


def _short(value) -> str:
    if isinstance(value, list):
        return "-".join(_short(v) for v in value) if len(value) <= 4 else f"{len(value)}items"
    if isinstance(value, dict):
        return "-".join(_short(v) for v in value.values())
    return str(value).lower()

