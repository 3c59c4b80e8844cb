"""Figures made of images: training samples, one prediction, the mistakes, first-layer weights."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from mnistlab.plots.base import CORRECT, WRONG, class_name, new_figure, show_image


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
        show_image(
            ax, image, f"#{int(index)}\nlabel {int(label)}: {class_name(class_names, label)}"
        )
    fig.suptitle(f"{k} random training samples", fontsize=11)
    return fig


def augmented_figure(originals: np.ndarray, variants: np.ndarray, labels: np.ndarray,
                     class_names, epochs: list[int]) -> Figure:
    """Each training sample (a row), then how augmentation showed it in a few epochs.

    Args:
        originals: uint8 ``(K, H, W)``, 0-255.
        variants: uint8 ``(K, E, H, W)``: sample k as epoch ``epochs[e]`` trained on it.
        labels: int ``(K,)``.
        class_names: one name per class.
        epochs: the 1-based epoch of each column of ``variants``.
    """
    k, e = variants.shape[:2]
    fig = new_figure(1.3 * (e + 1) + 0.4, 1.35 * k + 0.6)
    axes = fig.subplots(k, e + 1, squeeze=False)
    for row in range(k):
        show_image(axes[row, 0], originals[row],
                   f"{class_name(class_names, labels[row])}" if row else
                   f"original\n{class_name(class_names, labels[row])}", fontsize=8)
        for col in range(e):
            show_image(axes[row, col + 1], variants[row, col],
                       f"epoch {epochs[col]}" if row == 0 else "", fontsize=8)
    fig.suptitle("augmentation: the same training images as different epochs saw them",
                 fontsize=10)
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
    title = f"predicted {class_name(class_names, pred)} ({probs[pred]:.1%})"
    if true_label is not None:
        title += f"\ntrue label {class_name(class_names, true_label)}"
    show_image(ax_img, image, title, fontsize=10)
    colors = ["#bbbbbb"] * c
    colors[pred] = CORRECT if true_label is None or pred == int(true_label) else WRONG
    ax_bar.barh(range(c), probs, color=colors)
    ax_bar.set_yticks(range(c))
    ax_bar.set_yticklabels([class_name(class_names, i) for i in range(c)], parse_math=False)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability")
    ax_bar.set_ylabel("class")
    ax_bar.set_title("Model output (softmax)")
    for i, p in enumerate(probs):
        # Beside the bar's end; a bar too long for that gets its label inside, in the colour that
        # contrasts with the bar.
        if p <= 0.85:
            ax_bar.text(p + 0.01, i, f"{p:.3f}", va="center", fontsize=9, color="black")
        else:
            ax_bar.text(
                p - 0.01,
                i,
                f"{p:.3f}",
                va="center",
                ha="right",
                fontsize=9,
                color=text_color(colors[i]),
            )
    return fig


def text_color(background: str) -> str:
    """``black`` or ``white``, whichever reads better on ``background`` (any matplotlib colour).

    Uses the WCAG relative luminance: white on backgrounds darker than about 18 % grey.
    """
    from matplotlib.colors import to_rgb

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in to_rgb(background))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "white" if luminance < 0.179 else "black"


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
            f"true {class_name(class_names, labels[i])}\npred {class_name(class_names, predicted[i])}"
            f" ({confidence[i]:.1%})"
        )
        show_image(ax, images[i], title, fontsize=8)
    for ax in axes[len(worst) :]:
        ax.axis("off")
    fig.suptitle(
        f"Most confident mistakes ({len(worst)} of {len(wrong)} wrong, "
        f"out of {len(labels)} test images)",
        fontsize=11,
    )
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
