"""The search space file: defaults, validation and clear errors."""

from __future__ import annotations

import optuna
import pytest

from mnistlab.config import load_config
from mnistlab.errors import ConfigError
from mnistlab.tune.space import DEFAULT_SPACE, load_space, parse_space, suggest_config, tunable_keys

BASE = load_config("tutorial", data__dataset="digits")


def test_default_space_covers_the_mlp_fields():
    space = load_space(None, BASE)
    assert set(space.params) == {
        "model.hidden", "model.activation", "model.dropout", "train.optimizer",
        "train.learning_rate", "train.momentum", "train.batch_size", "train.epochs",
        "train.schedule",
    }
    assert space.settings.pruner == "median"
    assert space.text == DEFAULT_SPACE


def test_suggested_configs_are_valid_and_follow_the_bounds():
    space = load_space(None, BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(30):
        trial = study.ask()
        cfg = suggest_config(trial, space, BASE)
        assert 1 <= len(cfg.model.hidden) <= 3
        assert all(u in (32, 64, 128, 256, 512) for u in cfg.model.hidden)
        assert 1e-4 <= cfg.train.learning_rate <= 0.3
        assert 10 <= cfg.train.epochs <= 50
        assert cfg.train.batch_size in (32, 64, 128, 256)
        assert cfg.data.dataset == "digits"  # the base's data and seed are kept
        assert trial.params["model.hidden.layers"] == len(cfg.model.hidden)
        study.tell(trial, 0.5)


def test_layer_widths_from_a_range():
    space = parse_space('[model]\nhidden = { type = "layers", layers = [2, 2], units = [5, 9] }',
                        BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        cfg = suggest_config(study.ask(), space, BASE)
        assert len(cfg.model.hidden) == 2 and all(5 <= u <= 9 for u in cfg.model.hidden)


def test_fixed_values_apply_to_every_trial():
    space = parse_space('[train]\nepochs = 3\nlearning_rate = { type = "log", low = 0.01, '
                        'high = 0.1 }\n', BASE)
    cfg = suggest_config(optuna.create_study().ask(), space, BASE)
    assert cfg.train.epochs == 3 and 0.01 <= cfg.train.learning_rate <= 0.1


def test_unknown_field_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        parse_space('[train]\nlearnig_rate = { type = "log", low = 0.01, high = 0.1 }\n', BASE,
                    "s.toml")
    msg = str(e.value)
    assert "'train.learnig_rate'" in msg and "s.toml" in msg
    assert all(k in msg for k in tunable_keys())


@pytest.mark.parametrize("text, expected", [
    ('[train]\nlearning_rate = { type = "log", low = 0.1, high = 0.01 }', "low=0.1, high=0.01"),
    ('[train]\nlearning_rate = { type = "log", low = 0.0, high = 0.1 }', "low > 0"),
    ('[train]\nlearning_rate = { type = "float", low = 0.001, high = 50.0 }', "high bound 50.0"),
    ('[train]\nmomentum = { type = "float", low = 0.0, high = 1.5 }', "high bound 1.5"),
    ('[train]\nepochs = { type = "int", low = 0, high = 5 }', "low bound 0"),
    ('[train]\nepochs = { type = "int", low = 1.5, high = 5 }', "whole-number"),
    ('[train]\noptimizer = { type = "categorical", choices = ["sgd", "adamw"] }', "'adamw'"),
    ('[train]\noptimizer = { type = "categorical", choices = [] }', "must not be empty"),
    ('[train]\nepochs = { type = "normal", low = 1, high = 5 }', "type"),
    ('[train]\nepochs = { type = "int", lo = 1, high = 5 }', "lo"),
    ('[model]\nhidden = { type = "int", low = 1, high = 5 }', "type 'layers'"),
    ('[model]\nhidden = { type = "layers", layers = [0, 2], units = [8, 16] }', "smallest"),
    ('[model]\nhidden = { type = "layers", layers = [1, 2], units = [8, 70000] }', "largest"),
    ('[model]\nhidden = { type = "layers", layers = [1, 2], choices = [8, 0] }', "smallest"),
    ('[model]\nhidden = { type = "layers", layers = [1, 2] }', "one of units"),
    ('[train]\nepochs = "many"', "fixed value 'many'"),
    ('[data]\nval_fraction = { type = "float", low = 0.1, high = 0.3 }', "'data.val_fraction'"),
    ('seed = 3', "top-level key 'seed'"),
    ('[tune]\npruner = "hyperband"', "[tune]"),
    ('[tune]\npruner = "none"', "nothing to tune"),
    ('[train\nepochs = 3', "not valid TOML"),
])
def test_bad_spaces_get_clear_errors(text, expected):
    with pytest.raises(ConfigError) as e:
        parse_space(text, BASE, "space.toml")
    assert expected in str(e.value)
    assert "space.toml" in str(e.value)


def test_missing_space_file(tmp_path):
    with pytest.raises(ConfigError, match="search space file not found"):
        load_space(tmp_path / "nope.toml", BASE)
