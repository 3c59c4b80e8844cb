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
