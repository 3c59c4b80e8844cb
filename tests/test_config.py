import pytest

from mnistlab.config import PRESETS, load_config, parse_override, to_toml, valid_keys
from mnistlab.errors import ConfigError


def test_tutorial_defaults():
    cfg = load_config()
    assert cfg.preset == "tutorial" and cfg.seed == 111
    assert cfg.data.val_fraction == 0.3
    assert cfg.model.hidden == [100, 64, 32] and cfg.model.activation == "relu"
    assert (cfg.train.optimizer, cfg.train.learning_rate) == ("sgd", 0.01)
    assert (cfg.train.epochs, cfg.train.batch_size) == (50, 128)


def test_set_overrides_are_typed():
    cfg = load_config(overrides=["train.epochs=3", "model.hidden=[10, 5]", "train.shuffle=false"])
    assert cfg.train.epochs == 3 and cfg.model.hidden == [10, 5] and cfg.train.shuffle is False


def test_flags_override_file_and_preset(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('preset = "adam"\n[train]\nepochs = 7\nbatch_size = 32\n')
    cfg = load_config(file=f, train__epochs=2)
    assert cfg.preset == "adam" and cfg.train.optimizer == "adam"
    assert cfg.train.epochs == 2 and cfg.train.batch_size == 32


def test_round_trip_through_toml(tmp_path):
    cfg = load_config("quick", overrides=["data.dataset=digits"])
    f = tmp_path / "config.toml"
    f.write_text(to_toml(cfg))
    assert load_config(file=f) == cfg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epoch=3", "unknown key 'train.epoch'"),
        ("train.epochs=0", "greater than or equal to 1"),
        ("train.epochs=1000000000", "less than or equal to 10000"),
        ("train.batch_size=-5", "greater than or equal to 1"),
        ("train.epochs=many", "valid integer"),
        ("model.hidden=[100, 0]", "between 1 and"),
        ("train.optimizer=adagrad", "'sgd', 'adam' or 'rmsprop'"),
        ("data.val_fraction=1.5", "less than 1"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_values_are_clear(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert fragment in str(e.value)


def test_unknown_key_in_file_lists_valid_keys(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nepochz = 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(file=f)
    assert "train.epochz" in str(e.value) and "train.epochs" in str(e.value)


def test_bad_toml_and_missing_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(file=f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(file=tmp_path / "nope.toml")


def test_unknown_preset():
    with pytest.raises(ConfigError, match="Valid presets"):
        load_config("fastest")


def test_every_preset_validates():
    for name in PRESETS:
        assert load_config(name).preset == name


def test_parse_override_string_fallback():
    assert parse_override("data.dataset=digits") == {"data": {"dataset": "digits"}}
    assert "train.epochs" in valid_keys()
