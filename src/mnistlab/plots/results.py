"""Figures of results: training curves, the confusion matrix, confidence and calibration."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mnistlab.plots.base import CORRECT, WRONG, class_name, new_figure


def curves_figure(history: list[dict]) -> Figure:
    """Training vs validation loss and accuracy over epochs, side by side.

    One legend for both panels sits below them, outside the axes, so it never covers a curve.

    Args:
        history: one dict per epoch with ``epoch``, ``loss``, ``accuracy``, ``val_loss``,
            ``val_accuracy`` (the rows of ``history.csv``).
    """
    fig = new_figure(10, 4.1)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [int(r["epoch"]) for r in history]
    marker = "o" if len(epochs) <= 20 else None
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [r[key] for r in history], marker=marker, label="training")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], marker=marker, label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax_loss.set_title("Loss (categorical cross-entropy)")
    ax_acc.set_title("Accuracy")
    if epochs:
        fig.legend(*ax_loss.get_legend_handles_labels(), loc="outside lower center", ncols=2)
    else:
        for ax in (ax_loss, ax_acc):
            ax.text(
                0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes
            )
    return fig


def compare_curves_figure(histories: list[list[dict]], labels: list[str]) -> Figure:
    """Validation loss and accuracy of several runs on shared axes (``mnistlab compare``).

    Args:
        histories: per run, the rows of its ``history.csv`` (``epoch``, ``val_loss``,
            ``val_accuracy``); a run with no rows yet draws nothing.
        labels: per run, the legend entry (drawn as plain text, never as math).
    """
    fig = new_figure(11, 4.2 + 0.25 * ((len(labels) + 1) // 2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for rows, label in zip(histories, labels, strict=True):
        epochs = [r["epoch"] for r in rows]
        marker = "o" if len(epochs) <= 20 else None
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], marker=marker, label=label)
        ax_acc.plot(epochs, [r["val_accuracy"] for r in rows], marker=marker, label=label)
    for ax, name in ((ax_loss, "validation loss"), (ax_acc, "validation accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.set_title(name.capitalize())
        ax.grid(alpha=0.3)
    # Below both panels, outside the axes: the legend never covers a curve.
    legend = fig.legend(*ax_acc.get_legend_handles_labels(), loc="outside lower center", ncols=2)
    for text in legend.get_texts():
        text.set_parse_math(False)
    return fig


def confusion_figure(matrix, class_names) -> Figure:
    """Annotated confusion-matrix heatmap: true labels on rows, predicted labels on columns.

    The counts are drawn at ``confusion_fontsize(C)`` points: for 10 classes the 9.2-inch-wide
    PNG is shown at full size in the report at 1280 px, so 10 pt is 10 * 100 / 72 = 14 px.

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
    names = [class_name(class_names, i) for i in range(c)]
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
                    fontsize=confusion_fontsize(c),
                    color="white" if cm[i, j] > threshold else "black",
                )
    return fig


def confusion_fontsize(num_classes: int) -> float:
    """The size in points of the counts in a confusion matrix of ``num_classes`` classes.

    Large enough to read, small enough that a four-digit count fits its cell.
    """
    return 10.0 if num_classes <= 12 else 8.0 if num_classes <= 20 else 6.0


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
    fig = new_figure(10, 4.2)
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
    # Legends go below the axes, where they cover no bar and no point.
    ax_hist.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
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
    ax_rel.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    return fig
