import numpy as np

from mnistlab.config import ModelConfig
from mnistlab.model import TUTORIAL_PARAMS, build_model, summary_text


def test_tutorial_architecture():
    model = build_model(ModelConfig(), (28, 28))
    assert model.count_params() == TUTORIAL_PARAMS == 87_374
    names = [layer.name for layer in model.layers]
    assert names == ["flatten", "dense1", "dense2", "dense3", "output"]
    assert [layer.units for layer in model.layers[1:]] == [100, 64, 32, 10]
    assert "87,374" in summary_text(model)


def test_sequential_and_functional_are_identical():
    a = build_model(ModelConfig(api="sequential"), (28, 28), seed=5)
    b = build_model(ModelConfig(api="functional"), (28, 28), seed=5)
    assert a.count_params() == b.count_params()
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        assert wa.tobytes() == wb.tobytes()
    x = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    assert np.array_equal(a(x), b(x))


def test_seed_changes_weights_and_input_shape_follows_data():
    a = build_model(ModelConfig(), (8, 8), seed=1)
    b = build_model(ModelConfig(), (8, 8), seed=2)
    assert a.input_shape == (None, 8, 8)
    assert not np.array_equal(a.get_weights()[0], b.get_weights()[0])


def test_dropout_layers_are_added():
    m = build_model(ModelConfig(dropout=0.2, hidden=[16]), (8, 8))
    assert [layer.name for layer in m.layers] == ["flatten", "dense1", "dropout1", "output"]


def test_cnn_preset_is_the_keras_io_convnet():
    from mnistlab.config import load_config
    from mnistlab.model import KERAS_IO_CONVNET_PARAMS

    cfg = load_config("cnn")
    assert (cfg.train.optimizer, cfg.train.learning_rate, cfg.train.batch_size) == ("adam", 0.001, 128)
    assert (cfg.train.epochs, cfg.data.val_fraction) == (15, 0.1)
    model = build_model(cfg.model, (28, 28), 10)
    assert model.count_params() == KERAS_IO_CONVNET_PARAMS
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Reshape", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten",
                     "Dropout", "Dense"]
    conv = model.get_layer("conv1")
    assert (conv.filters, conv.kernel_size, conv.padding) == (32, (3, 3), "valid")
    assert model.get_layer("dropout").rate == 0.5


def test_cnn_sequential_and_functional_give_identical_weights():
    blocks = [{"filters": 4, "batch_norm": True}, {"filters": 6, "padding": "same", "pool": 1}]
    seq = ModelConfig(kind="cnn", hidden=[16], dropout=0.25, conv=blocks)
    fun = seq.model_copy(update={"api": "functional"})
    a, b = build_model(seq, (12, 12), 3, seed=5), build_model(fun, (12, 12), 3, seed=5)
    assert [w.shape for w in a.get_weights()] == [w.shape for w in b.get_weights()]
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))
    x = np.random.default_rng(0).random((2, 12, 12), dtype=np.float32)
    np.testing.assert_array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))


def test_cnn_config_is_validated():
    import pytest

    from mnistlab.errors import ConfigError

    with pytest.raises(ConfigError, match="shrink to nothing"):
        build_model(ModelConfig(kind="cnn"), (8, 8), 10)
    with pytest.raises(ValueError, match="at least one conv block"):
        ModelConfig(kind="cnn", conv=[])
    with pytest.raises(ValueError, match="at least one hidden layer"):
        ModelConfig(hidden=[])
    with pytest.raises(ValueError, match="padding"):
        ModelConfig(kind="cnn", conv=[{"padding": "full"}])
