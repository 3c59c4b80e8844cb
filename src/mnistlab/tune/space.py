"""The search space of ``mnistlab tune``: which config fields to vary, and how, as data.

A space is a TOML file shaped like ``config.toml``: ``[model]`` and ``[train]`` tables whose keys
are config fields. A table value is a distribution, anything else a fixed value::

    [train]
    learning_rate = { type = "log", low = 1e-4, high = 0.3 }     # log-uniform float
    momentum = { type = "float", low = 0.0, high = 0.95 }        # uniform float (optional step)
    epochs = { type = "int", low = 10, high = 50 }               # integer (optional step, log)
    batch_size = { type = "categorical", choices = [32, 64, 128] }
    shuffle = true                                               # fixed, not tuned

    [model]
    hidden = { type = "layers", layers = [1, 3], units = [32, 512], log = true }

``layers`` is for ``model.hidden``: a number of hidden layers, then a width for each, from a
range (``units = [low, high]``, optional ``log``) or a list (``choices = [64, 128, 256]``). A few
widths train faster than many: JAX compiles the weight initialiser once per new shape. An optional
``[tune]`` table sets the sampler and pruner (``TuneSettings``). Every bound and choice is checked
against the config's own rules, so a space can only propose configurations ``mnistlab train``
accepts.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mnistlab.config import Config, valid_keys
from mnistlab.errors import ConfigError

# Not tunable: they change what is measured (the data, the split, the seed) or only how fast.
FIXED_KEYS = ("preset", "seed", "train.loop", "train.devices", "train.monitor")

DEFAULT_SPACE = """\
# mnistlab's default search space for the tutorial's MLP (mnistlab tune without --space).
# Sized so 60 trials fit in about 15 minutes on 2 cores with full Fashion-MNIST (README):
# widths up to 512, batches of 64-256, at most 40 epochs, and pruning from epoch 3.
[model]
hidden = { type = "layers", layers = [1, 3], choices = [64, 128, 256, 512] }
activation = { type = "categorical", choices = ["relu", "tanh"] }
dropout = { type = "float", low = 0.0, high = 0.3 }

[train]
optimizer = { type = "categorical", choices = ["sgd", "adam", "rmsprop"] }
learning_rate = { type = "log", low = 1e-4, high = 0.3 }
momentum = { type = "float", low = 0.0, high = 0.95 }
schedule = { type = "categorical", choices = ["constant", "cosine"] }
batch_size = { type = "categorical", choices = [64, 128, 256] }
epochs = { type = "int", low = 10, high = 40 }  # the cap: pruning stops weak trials sooner

[tune]
pruner = "median"
pruner_startup_trials = 5
pruner_warmup_epochs = 3
sampler_startup_trials = 10
"""


def tunable_keys() -> list[str]:
    """Config fields a space may name, as ``section.key``."""
    return [k for k in valid_keys() if k.startswith(("model.", "train.")) and k not in FIXED_KEYS]


class Param(BaseModel):
    """One distribution over a config field."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["int", "float", "log", "categorical", "layers"]
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    choices: list[bool | int | float | str] | None = None
    layers: list[int] | None = Field(None, min_length=2, max_length=2)
    units: list[int] | None = Field(None, min_length=2, max_length=2)

    @model_validator(mode="after")
    def _shape(self):
        needs = {"int": ("low", "high"), "float": ("low", "high"), "log": ("low", "high"),
                 "categorical": ("choices",), "layers": ("layers",)}[self.type]
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            raise ValueError(f"type {self.type!r} needs {' and '.join(needs)}; missing {missing}")
        if self.type == "layers" and (self.units is None) == (self.choices is None):
            raise ValueError("type 'layers' needs one of units = [low, high] or choices = [...]")
        if self.type in ("categorical", "layers") and self.choices == []:
            raise ValueError("choices must not be empty")
        for lo, hi, name in ((self.low, self.high, "low < high"),
                             *((p[0], p[1], f"{n}: [low, high] with low <= high")
                               for n, p in (("layers", self.layers), ("units", self.units)) if p)):
            if lo is not None and hi is not None and not lo <= hi:
                raise ValueError(f"bounds must satisfy {name}; received low={lo}, high={hi}")
        if self.step is not None and (self.log or self.type == "log"):
            raise ValueError("step and a log scale cannot be combined; drop one")
        if self.type == "log" and self.low is not None and self.low <= 0:
            raise ValueError(f"a log distribution needs low > 0; received low={self.low}")
        return self


class TuneSettings(BaseModel):
    """The ``[tune]`` table: sampler and pruner settings."""

    model_config = ConfigDict(extra="forbid", strict=True)
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = Field(5, ge=0, description="trials before any is pruned")
    pruner_warmup_epochs: int = Field(4, ge=0, description="epochs before a trial can be pruned")
    sampler_startup_trials: int = Field(10, ge=0, description="random trials before TPE")


class Space(BaseModel):
    """A validated search space: distributions, fixed values and tuner settings."""

    params: dict[str, Param]
    fixed: dict[str, Any]
    settings: TuneSettings
    text: str  # the TOML it came from, saved with the study


def _flatten(data: dict, source: str) -> dict[str, Any]:
    out = {}
    for section, table in data.items():
        if section == "tune":
            continue
        if not isinstance(table, dict):
            raise ConfigError(
                f"{source}: top-level key {section!r} must be a table like [model] or [train]; "
                f"received {table!r}. Tunable fields: {', '.join(tunable_keys())}"
            )
        for key, value in table.items():
            out[f"{section}.{key}"] = value
    return out


def _check_value(base: Config, key: str, value, what: str, source: str) -> None:
    """Raise ConfigError unless ``key = value`` gives a valid configuration."""
    section, field = key.split(".")
    data = base.model_dump()
    data[section][field] = value
    try:
        Config.model_validate(data)
    except ValidationError as e:
        msg = "; ".join(err["msg"] for err in e.errors())
        raise ConfigError(f"{source}: {key}: {what} {value!r} is not a valid value ({msg})") from None


def _check_param(base: Config, key: str, p: Param, source: str) -> None:
    if (p.type == "layers") != (key == "model.hidden"):
        raise ConfigError(
            f"{source}: {key}: type 'layers' is for model.hidden only, and model.hidden needs it "
            f"(or a fixed list like [256, 128]); received type {p.type!r}"
        )
    if p.type == "layers":
        widths = p.units or p.choices
        _check_value(base, key, [min(widths)] * p.layers[0], "smallest network", source)
        _check_value(base, key, [max(widths)] * p.layers[1], "largest network", source)
        return
    if p.type == "categorical":
        for choice in p.choices:
            _check_value(base, key, choice, "choice", source)
        return
    if p.type == "int" and not all(float(v).is_integer() for v in (p.low, p.high, p.step or 1)):
        raise ConfigError(f"{source}: {key}: type 'int' needs whole-number bounds; received "
                          f"low={p.low}, high={p.high}, step={p.step}")
    cast = int if p.type == "int" else float
    _check_value(base, key, cast(p.low), "low bound", source)
    _check_value(base, key, cast(p.high), "high bound", source)


def parse_space(text: str, base: Config, source: str = "the search space") -> Space:
    """Validate a search space written as TOML against the base configuration.

    Args:
        text: the TOML text (see the module docstring).
        base: the configuration trials start from (preset and data).
        source: a name for messages (the file path).

    Returns:
        The ``Space``.

    Raises:
        ConfigError: not TOML, an unknown field, a bad distribution or bounds outside the
            config's rules; the message lists the valid fields.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source} is not valid TOML: {e}. Fix the file and retry") from None
    try:
        settings = TuneSettings.model_validate(data.get("tune", {}))
    except ValidationError as e:
        raise ConfigError(f"{source}: [tune]: {_errors(e)}. Valid [tune] keys: "
                          f"{', '.join(TuneSettings.model_fields)}") from None
    params, fixed = {}, {}
    for key, value in _flatten(data, source).items():
        if key not in tunable_keys():
            raise ConfigError(f"{source}: unknown or untunable field {key!r}. Tunable fields: "
                              f"{', '.join(tunable_keys())}")
        if not isinstance(value, dict):
            _check_value(base, key, value, "fixed value", source)
            fixed[key] = value
            continue
        try:
            param = Param.model_validate(value)
        except ValidationError as e:
            raise ConfigError(f"{source}: {key}: {_errors(e)}. A distribution is a table with "
                              "type = int|float|log|categorical|layers and its bounds") from None
        _check_param(base, key, param, source)
        params[key] = param
    if not params:
        raise ConfigError(f"{source} has no distributions: nothing to tune. Tunable fields: "
                          f"{', '.join(tunable_keys())}")
    return Space(params=params, fixed=fixed, settings=settings, text=text)


def _errors(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc + ': ' if loc else ''}{err['msg']} (received {err.get('input')!r})")
    return "; ".join(parts)


def load_space(path: str | Path | None, base: Config) -> Space:
    """Read and validate a space file, or the default space when ``path`` is None.

    Raises:
        ConfigError: the file is missing or invalid (see ``parse_space``).
    """
    if path is None:
        return parse_space(DEFAULT_SPACE, base, "the default search space")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"search space file not found: {path}. Pass an existing .toml file "
                          "(see `mnistlab tune --help`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read search space file {path}: {e}") from None
    return parse_space(text, base, str(path))


def suggest_config(trial, space: Space, base: Config) -> Config:
    """Ask an Optuna trial for one value of every distribution; return the trial's config.

    Parameter names are the config keys (``train.learning_rate``); ``model.hidden`` becomes
    ``model.hidden.layers`` and ``model.hidden.units1``, ``units2``, ...

    Raises:
        ConfigError: the combination is not a valid configuration.
    """
    data = base.model_dump()
    values = dict(space.fixed)
    for key, p in space.params.items():
        values[key] = _suggest(trial, key, p)
    for key, value in values.items():
        section, field = key.split(".")
        data[section][field] = value
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"the trial's combination is not a valid configuration: {_errors(e)}"
                          ) from None


def _suggest(trial, key: str, p: Param):
    if p.type == "categorical":
        return trial.suggest_categorical(key, p.choices)
    if p.type == "int":
        return trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    if p.type in ("float", "log"):
        return trial.suggest_float(key, float(p.low), float(p.high), step=p.step,
                                   log=p.log or p.type == "log")
    n = trial.suggest_int(f"{key}.layers", p.layers[0], p.layers[1])
    if p.choices is not None:
        return [trial.suggest_categorical(f"{key}.units{i}", p.choices) for i in range(1, n + 1)]
    return [trial.suggest_int(f"{key}.units{i}", p.units[0], p.units[1], log=p.log)
            for i in range(1, n + 1)]
