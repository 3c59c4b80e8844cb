"""Shared pieces of every figure: an Agg-backed Figure, PNG bytes, colours, image tiles."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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


def class_name(class_names, label: int) -> str:
    label = int(label)
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def show_image(ax, image: np.ndarray, title: str, fontsize: float = 9) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title, fontsize=fontsize, parse_math=False)
    ax.set_xticks([])
    ax.set_yticks([])
