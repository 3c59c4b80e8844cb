"""Figures of the tutorial and of the report, as pure functions of arrays.

Every function returns a ``matplotlib.figure.Figure`` drawn on an Agg canvas (never ``pyplot``, so
nothing global changes and nothing opens a window); ``png_bytes`` turns one into PNG bytes. Text
that comes from a run (class names) is drawn with ``parse_math=False`` so a ``$`` in a name is
just a character.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100
CORRECT, WRONG = "#2b7bba", "#d1495b"


def new_figure(width: float, height: float) -> Figure:
    """Return an empty figure of ``width`` x ``height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """Render ``fig`` as PNG and return the file's bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _name(class_names, label: int) -> str:
    label = int(label)
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def _show_image(ax, image: np.ndarray, title: str, fontsize: float = 9) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title, fontsize=fontsize, parse_math=False)
    ax.set_xticks([])
    ax.set_yticks([])


def samples_figure(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray, class_names
) -> Figure:
    """Training samples in a row, each titled with its index and label (the tutorial's first plot).

    Args:
        images: uint8 ``(K, H, W)``, 0-255.
        labels: int ``(K,)``.
        indices: int ``(K,)``, positions in the training set.
        class_names: one name per class.
    """
    k = len(images)
    fig = new_figure(max(2.0 * k, 4.0), 2.6)
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, image, label, index in zip(axes, images, labels, indices, strict=True):
        _show_image(ax, image, f"#{int(index)}\nlabel {int(label)}: {_name(class_names, label)}")
    fig.suptitle(f"{k} random training samples", fontsize=11)
    return fig


def curves_figure(history: list[dict]) -> Figure:
    """Training vs validation loss and accuracy over epochs, side by side.

    Args:
        history: one dict per epoch with ``epoch``, ``loss``, ``accuracy``, ``val_loss``,
            ``val_accuracy`` (the rows of ``history.csv``).
    """
    fig = new_figure(10, 3.8)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [int(r["epoch"]) for r in history]
    marker = "o" if len(epochs) <= 20 else None
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [r[key] for r in history], marker=marker, label=f"train {label}")
        ax.plot(
            epochs, [r[f"val_{key}"] for r in history], marker=marker, label=f"validation {label}"
        )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax_loss.set_title("Loss (categorical cross-entropy)")
    ax_acc.set_title("Accuracy")
    if not epochs:
        for ax in (ax_loss, ax_acc):
            ax.text(
                0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes
            )
    return fig


def confusion_figure(matrix, class_names) -> Figure:
    """Annotated confusion-matrix heatmap: true labels on rows, predicted labels on columns.

    Args:
        matrix: int ``(C, C)``; ``matrix[i, j]`` counts test images of class ``i`` predicted ``j``.
        class_names: ``C`` names.
    """
    cm = np.asarray(matrix, dtype=np.int64)
    c = cm.shape[0]
    size = min(max(4.5, 0.55 * c + 2.5), 14)
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="test images")
    names = [_name(class_names, i) for i in range(c)]
    ax.set_xticks(range(c))
    long_names = max(map(len, names)) > 2
    ax.set_xticklabels(
        names,
        rotation=45 if long_names else 0,
        ha="right" if long_names else "center",
        parse_math=False,
    )
    ax.set_yticks(range(c))
    ax.set_yticklabels(names, parse_math=False)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(f"Confusion matrix ({int(cm.sum())} test images)")
    if c <= 30:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(c):
            for j in range(c):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8 if c <= 12 else 6,
                    color="white" if cm[i, j] > threshold else "black",
                )
    return fig


def prediction_figure(
    image: np.ndarray, probabilities: np.ndarray, class_names, true_label: int | None = None
) -> Figure:
    """One test image next to the model's probability for every class.

    Args:
        image: uint8 ``(H, W)``.
        probabilities: float ``(C,)``, summing to 1.
        class_names: ``C`` names.
        true_label: the image's label, if known.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    pred = int(np.argmax(probs))
    c = len(probs)
    fig = new_figure(9, max(3.2, 0.3 * c + 1.2))
    ax_img, ax_bar = fig.subplots(1, 2, width_ratios=[1, 1.6])
    title = f"predicted {_name(class_names, pred)} ({probs[pred]:.1%})"
    if true_label is not None:
        title += f"\ntrue label {_name(class_names, true_label)}"
    _show_image(ax_img, image, title, fontsize=10)
    colors = ["#bbbbbb"] * c
    colors[pred] = CORRECT if true_label is None or pred == int(true_label) else WRONG
    ax_bar.barh(range(c), probs, color=colors)
    ax_bar.set_yticks(range(c))
    ax_bar.set_yticklabels([_name(class_names, i) for i in range(c)], parse_math=False)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability")
    ax_bar.set_ylabel("class")
    ax_bar.set_title("Model output (softmax)")
    for i, p in enumerate(probs):
        ax_bar.text(min(p + 0.01, 0.9), i, f"{p:.3f}", va="center", fontsize=8)
    return fig


def mistakes_figure(
    images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, class_names, n: int = 12
) -> Figure:
    """Gallery of the most confident wrong predictions (or a note that there are none).

    Args:
        images: uint8 ``(M, H, W)`` test images.
        labels: int ``(M,)`` true labels.
        probabilities: float ``(M, C)`` model outputs.
        class_names: ``C`` names.
        n: at most this many tiles.
    """
    probs = np.asarray(probabilities)
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    confidence = probs.max(axis=1)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
    if len(worst) == 0:
        fig = new_figure(6, 2.5)
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            f"No mistakes: all {len(labels)} test images were classified correctly.",
            ha="center",
            va="center",
            fontsize=12,
            transform=ax.transAxes,
        )
        fig.suptitle("Most confident mistakes")
        return fig
    cols = min(6, len(worst))
    rows = math.ceil(len(worst) / cols)
    fig = new_figure(max(2.0 * cols, 5.0), 2.3 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, i in zip(axes, worst, strict=False):
        title = (
            f"true {_name(class_names, labels[i])}\npred {_name(class_names, predicted[i])}"
            f" ({confidence[i]:.1%})"
        )
        _show_image(ax, images[i], title, fontsize=8)
    for ax in axes[len(worst) :]:
        ax.axis("off")
    fig.suptitle(
        f"Most confident mistakes ({len(worst)} of {len(wrong)} wrong, "
        f"out of {len(labels)} test images)",
        fontsize=11,
    )
    return fig


def confidence_figure(probabilities: np.ndarray, labels: np.ndarray) -> Figure:
    """How sure the model is when it is right vs wrong, and whether that confidence is calibrated.

    Left: histogram of the winning probability for correct and wrong predictions (log counts).
    Right: reliability diagram, accuracy per confidence bin against the diagonal.

    Args:
        probabilities: float ``(M, C)``.
        labels: int ``(M,)``.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    fig = new_figure(10, 3.8)
    ax_hist, ax_rel = fig.subplots(1, 2)
    bins = np.linspace(0, 1, 21)
    ax_hist.hist(
        conf[correct], bins=bins, color=CORRECT, alpha=0.7, label=f"correct ({correct.sum()})"
    )
    ax_hist.hist(
        conf[~correct], bins=bins, color=WRONG, alpha=0.7, label=f"wrong ({(~correct).sum()})"
    )
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("winning probability (confidence)")
    ax_hist.set_ylabel("test images (log scale)")
    ax_hist.set_title("Confidence of correct vs wrong predictions")
    ax_hist.legend(loc="upper left")
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(conf, edges) - 1, 0, 9)
    centers, accs, counts = [], [], []
    for b in range(10):
        mask = which == b
        if mask.any():
            centers.append(conf[mask].mean())
            accs.append(correct[mask].mean())
            counts.append(int(mask.sum()))
    ax_rel.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    ax_rel.plot(centers, accs, "o-", color=CORRECT, label="this model")
    ece = sum(n * abs(a - c) for n, a, c in zip(counts, accs, centers, strict=True)) / max(
        len(conf), 1
    )
    ax_rel.set_xlim(0, 1)
    ax_rel.set_ylim(0, 1.02)
    ax_rel.set_xlabel("mean confidence in bin")
    ax_rel.set_ylabel("accuracy in bin")
    ax_rel.set_title(f"Reliability (expected calibration error {ece:.3f})")
    ax_rel.grid(alpha=0.3)
    ax_rel.legend(loc="upper left")
    return fig


def weight_mosaic(kernel: np.ndarray, image_shape: tuple[int, int], max_units: int = 100):
    """Lay out each unit's weights as an image tile in one grid, each tile scaled to [-1, 1].

    Args:
        kernel: float ``(H*W, U)``.
        image_shape: ``(H, W)`` of the input images.
        max_units: show at most this many units (the first ones).

    Returns:
        ``(mosaic, shown)``: float32 ``(rows*(H+1)-1, cols*(W+1)-1)`` with NaN between and after
        tiles, and the number of tiles.

    Raises:
        ValueError: the kernel's input size is not ``H*W``.
    """
    h, w = image_shape
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim != 2 or kernel.shape[0] != h * w:
        raise ValueError(
            f"kernel must have shape ({h * w}, units) for {h}x{w} images; received {kernel.shape}"
        )
    shown = min(kernel.shape[1], max_units)
    cols = math.ceil(math.sqrt(shown))
    rows = math.ceil(shown / cols)
    mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, dtype=np.float32)
    for u in range(shown):
        tile = kernel[:, u].reshape(h, w)
        r, c = divmod(u, cols)
        mosaic[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tile / (
            float(np.abs(tile).max()) or 1.0
        )
    return mosaic, shown


def weights_figure(
    kernel: np.ndarray, image_shape: tuple[int, int], layer_name: str = "dense1"
) -> Figure:
    """The first Dense layer's weights, one tile per unit, reshaped to the input image.

    Red pixels push a unit up, blue pixels push it down; each tile has its own symmetric scale.
    All tiles are one image (one axes), which keeps the figure fast to draw.

    Args:
        kernel: float ``(H*W, U)``.
        image_shape: ``(H, W)`` of the input images.
        layer_name: shown in the title.

    Raises:
        ValueError: the kernel's input size is not ``H*W``.
    """
    import matplotlib

    h, w = image_shape
    mosaic, shown = weight_mosaic(kernel, image_shape)
    units = np.shape(kernel)[1]
    fig = new_figure(8.5, 8.0)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    im = ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_frame_on(False)
    fig.colorbar(im, ax=ax, shrink=0.6, label="weight / largest |weight| of the unit")
    more = f", first {shown} shown" if shown < units else ""
    ax.set_title(f"{layer_name} weights: one {h}x{w} tile per unit ({units} units{more})")
    return fig
