"""Every figure is a readable PNG for 28x28 and 8x8 images; the diagram works without Graphviz."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from reportkit import check_png, tiny_model

from mnistlab import diagram, plots

NAMES = tuple(str(i) for i in range(10))


def _data(shape, n=40, c=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = (np.arange(n) % c).astype(np.int64)
    probs = rng.dirichlet(np.ones(c), size=n)
    return images, labels, probs


@pytest.mark.parametrize("shape", [(28, 28), (8, 8)])
def test_every_figure_is_a_readable_png(shape):
    images, labels, probs = _data(shape)
    history = [
        {
            "epoch": e,
            "loss": 1 / e,
            "accuracy": 1 - 1 / (e + 1),
            "val_loss": 1.1 / e,
            "val_accuracy": 1 - 1.2 / (e + 1),
        }
        for e in range(1, 6)
    ]
    cm = np.zeros((10, 10), dtype=int)
    np.add.at(cm, (labels, probs.argmax(1)), 1)
    kernel = np.random.default_rng(1).normal(size=(shape[0] * shape[1], 100))
    figures = {
        "samples": plots.samples_figure(images[:5], labels[:5], np.arange(5), NAMES),
        "curves": plots.curves_figure(history),
        "confusion": plots.confusion_figure(cm, NAMES),
        "prediction": plots.prediction_figure(images[0], probs[0], NAMES, true_label=labels[0]),
        "mistakes": plots.mistakes_figure(images, labels, probs, NAMES),
        "confidence": plots.confidence_figure(probs, labels),
        "weights": plots.weights_figure(kernel, shape),
    }
    for name, fig in figures.items():
        image = check_png(plots.png_bytes(fig))
        assert image.mode in ("RGBA", "RGB"), name


def test_curves_label_accuracy_axis_as_accuracy():
    history = [{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.2, "val_accuracy": 0.4}]
    fig = plots.curves_figure(history)
    ax_loss, ax_acc = fig.axes
    assert ax_loss.get_ylabel() == "loss"
    assert ax_acc.get_ylabel() == "accuracy"
    assert ax_acc.get_xlabel() == "epoch"
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == [
        "train accuracy",
        "validation accuracy",
    ]


def test_confusion_matrix_rows_are_true_labels_and_annotated():
    cm = np.array([[5, 1], [0, 7]])
    fig = plots.confusion_figure(cm, ("cat", "dog"))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "true label" and ax.get_xlabel() == "predicted label"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog"]
    # The annotation at row 0, column 1 (true cat, predicted dog) reads 1.
    cells = {(t.get_position()[1], t.get_position()[0]): t.get_text() for t in ax.texts}
    assert cells[(0, 1)] == "1" and cells[(1, 1)] == "7"


def test_mistakes_picks_most_confident_wrong_first():
    images = np.zeros((3, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1, 2])
    probs = np.array([[0.1, 0.9, 0.0], [0.0, 1.0, 0.0], [0.6, 0.0, 0.4]])
    fig = plots.mistakes_figure(images, labels, probs, ("a", "b", "c"))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["true a\npred b (90.0%)", "true c\npred a (60.0%)"]


def test_zero_mistakes_gives_a_message_not_an_empty_plot():
    images, labels, _ = _data((8, 8), n=10)
    probs = np.eye(10)[labels]
    fig = plots.mistakes_figure(images, labels, probs, NAMES)
    check_png(plots.png_bytes(fig))
    assert "No mistakes" in fig.axes[0].texts[0].get_text()


def test_dollar_signs_in_class_names_are_drawn_literally():
    names = ("$\\frac{1}{0", "<b>x</b>", "a$b$c")
    images, labels, probs = _data((8, 8), n=9, c=3)
    cm = np.ones((3, 3), dtype=int)
    for fig in (
        plots.confusion_figure(cm, names),
        plots.prediction_figure(images[0], probs[0], names),
        plots.mistakes_figure(images, labels, probs, names),
        plots.samples_figure(images[:3], labels[:3], np.arange(3), names),
    ):
        check_png(plots.png_bytes(fig))


def test_weights_reject_a_kernel_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"\(64, units\).*received \(784, 4\)"):
        plots.weights_figure(np.zeros((784, 4)), (8, 8))


def test_weights_one_tile_per_unit():
    kernel = np.random.default_rng(0).normal(size=(64, 12))
    mosaic, shown = plots.weight_mosaic(kernel, (8, 8))
    assert shown == 12 and mosaic.shape == (3 * 9 - 1, 4 * 9 - 1)
    assert np.isfinite(mosaic).sum() == 12 * 64
    # Unit 5 sits in row 1, column 1, scaled so its largest |weight| is 1.
    tile = mosaic[9:17, 9:17]
    np.testing.assert_allclose(
        tile, kernel[:, 5].reshape(8, 8) / np.abs(kernel[:, 5]).max(), rtol=1e-6
    )


@pytest.fixture(scope="module")
def model():
    return tiny_model((28, 28), 10, hidden=(100, 64, 32))


def test_layer_rows_match_the_tutorial_model(model):
    rows = diagram.layer_rows(model)
    assert [r["name"] for r in rows] == ["input", "flatten", "dense1", "dense2", "dense3", "output"]
    assert [r["output_shape"] for r in rows] == [
        "(None, 28, 28)",
        "(None, 784)",
        "(None, 100)",
        "(None, 64)",
        "(None, 32)",
        "(None, 10)",
    ]
    assert sum(r["params"] for r in rows) == 87_374
    assert rows[-1]["activation"] == "softmax"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_diagram_uses_graphviz_when_available(model):
    d = diagram.model_diagram(model)
    assert d.method == "graphviz"
    check_png(d.png)


def test_diagram_fallback_when_forced(model):
    d = diagram.model_diagram(model, force_fallback=True)
    assert d.method == "matplotlib"
    check_png(d.png)


def test_diagram_falls_back_when_graphviz_is_absent(model, monkeypatch, tmp_path):
    # A PATH with no `dot` on it: plot_model genuinely fails and the fallback must take over.
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("dot") is None
    d = diagram.model_diagram(model)
    assert d.method == "matplotlib"
    assert "Graphviz" in d.note
    check_png(d.png)


def test_fallback_diagram_shows_names_types_shapes_and_params(model):
    fig = diagram.fallback_figure(diagram.layer_rows(model), title="mnist_mlp")
    text = "\n".join(t.get_text() for t in fig.axes[0].texts)
    for needle in ("dense1  (Dense, relu)", "output (None, 10)", "params 78,500", "flatten"):
        assert needle in text
    assert "87,374 parameters" in fig.axes[0].get_title()
