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
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["training", "validation"]


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_curve_legends_sit_outside_every_axes():
    """Checked on the drawn figure: no legend box overlaps a plotting area, so none covers a curve."""
    history = [
        {
            "epoch": e,
            "loss": 2 / e,
            "accuracy": 1 - 1 / (e + 1),
            "val_loss": 2.2 / e,
            "val_accuracy": 1 - 1.2 / (e + 1),
        }
        for e in range(1, 31)
    ]
    runs = [history, [dict(r, val_loss=r["val_loss"] * 1.1) for r in history]]
    figs = [
        plots.curves_figure(history),
        plots.compare_curves_figure(runs, ["tutorial-seed1", "tutorial+epochs=30-seed2"]),
        plots.confidence_figure(*_data((8, 8), n=200)[2:0:-1]),
    ]
    for fig in figs:
        plots.png_bytes(fig)  # lays the figure out
        renderer = fig.canvas.get_renderer()
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                assert not _overlaps(box, ax.get_window_extent(renderer)), (legend, ax)


def test_confusion_counts_are_at_least_11_px_in_the_report_at_1280():
    """Points x dpi / 72 x (shown width / PNG width) >= 11 for MNIST-sized matrices.

    At 1280 px the report's column is 1072 px wide (body max-width 1120 px less 2 x 1.5 rem of
    padding); a narrower PNG is shown at its own size.
    """
    for c in (2, 10, 12):
        fig = plots.confusion_figure(np.arange(c * c).reshape(c, c) * 11, NAMES[:c] * 2)
        png_width = check_png(plots.png_bytes(fig)).size[0]
        shown = min(png_width, 1072)
        sizes = {t.get_fontsize() for t in fig.axes[0].texts}
        assert len(sizes) == 1, sizes
        assert sizes.pop() * fig.dpi / 72 * shown / png_width >= 11, c


def _contrast(a, b) -> float:
    """WCAG contrast ratio of two matplotlib colours."""
    from matplotlib.colors import to_rgb

    def luminance(color):
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(color)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_probability_labels_contrast_with_what_is_behind_them():
    from mnistlab.plots.images import text_color

    assert text_color("navy") == "white" and text_color("#bbbbbb") == "black"
    for true_label in (0, 1):  # the top bar blue (right) or red (wrong)
        probs = np.array([0.95, 0.03, 0.02])
        fig = plots.prediction_figure(
            np.zeros((8, 8), np.uint8), probs, ("a", "b", "c"), true_label
        )
        ax_bar = fig.axes[1]
        bars = {round(b.get_width(), 3): b.get_facecolor() for b in ax_bar.patches}
        labels = {t.get_text(): t for t in ax_bar.texts}
        # The long bar's label is inside it, readable on the bar's colour (WCAG AA, 4.5:1).
        inside = labels["0.950"]
        assert inside.get_position()[0] < 0.95
        assert _contrast(inside.get_color(), bars[0.95]) >= 4.5
        # Short bars' labels sit beside them, on the white axes.
        assert labels["0.030"].get_position()[0] > 0.03
        assert _contrast(labels["0.030"].get_color(), "white") >= 4.5


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
