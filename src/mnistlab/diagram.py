"""The model's architecture as a picture and as table rows.

``keras.utils.plot_model`` draws the diagram when pydot and Graphviz's ``dot`` are installed; if
either is missing (or fails), the same information — layer name, type, output shape, parameters,
arrows — is drawn with matplotlib instead, so a report never lacks its diagram.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from mnistlab.plots.base import new_figure, png_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Diagram:
    """A rendered architecture diagram.

    Attributes:
        png: the PNG file's bytes.
        method: ``"graphviz"`` (keras.utils.plot_model) or ``"matplotlib"`` (the fallback).
        note: why the fallback was used (empty for graphviz).
    """

    png: bytes
    method: str
    note: str = ""


def _shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def layer_rows(model) -> list[dict]:
    """Describe each layer of a built Keras model, input first.

    Returns:
        One dict per layer: ``name``, ``type``, ``output_shape`` (text such as ``(None, 100)``),
        ``params`` (int) and ``activation`` (name, or ``""``).
    """
    rows = []
    layers = list(model.layers)
    if not layers or type(layers[0]).__name__ != "InputLayer":
        rows.append(
            {
                "name": "input",
                "type": "InputLayer",
                "output_shape": _shape(model.inputs[0].shape),
                "params": 0,
                "activation": "",
            }
        )
    for layer in layers:
        activation = getattr(layer, "activation", None)
        rows.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": _shape(layer.output.shape),
                "params": int(layer.count_params()),
                "activation": getattr(activation, "__name__", "") if activation else "",
            }
        )
    return rows


def fallback_figure(rows: list[dict], title: str = "model"):
    """Draw layer boxes (name, type, output shape, parameters) joined by arrows, top to bottom.

    Args:
        rows: from ``layer_rows``.
        title: the model's name.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    n = len(rows)
    box_h, gap = 1.0, 0.6
    height = n * box_h + (n - 1) * gap
    fig = new_figure(5.2, 0.95 * height + 1.0)
    ax = fig.add_subplot()
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.2, height + 0.2)
    ax.axis("off")
    total = sum(r["params"] for r in rows)
    ax.set_title(f"{title}: {total:,} parameters", fontsize=11, parse_math=False)
    for i, row in enumerate(rows):
        top = height - i * (box_h + gap)
        ax.add_patch(
            FancyBboxPatch(
                (1, top - box_h),
                8,
                box_h,
                boxstyle="round,pad=0.02",
                facecolor="#e8f0fa" if i else "#f4f4f4",
                edgecolor="#1f4e79",
            )
        )
        kind = row["type"] + (f", {row['activation']}" if row["activation"] else "")
        ax.text(
            5,
            top - 0.3,
            f"{row['name']}  ({kind})",
            ha="center",
            va="center",
            fontsize=10,
            fontweight="bold",
            parse_math=False,
        )
        ax.text(
            5,
            top - 0.7,
            f"output {row['output_shape']}   params {row['params']:,}",
            ha="center",
            va="center",
            fontsize=9,
            parse_math=False,
        )
        if i < n - 1:
            ax.add_patch(
                FancyArrowPatch(
                    (5, top - box_h),
                    (5, top - box_h - gap),
                    arrowstyle="-|>",
                    mutation_scale=14,
                    color="#1f4e79",
                )
            )
    return fig


def _plot_model_png(model) -> bytes:
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.png"
        keras.utils.plot_model(
            model,
            to_file=str(out),
            show_shapes=True,
            show_layer_names=True,
            show_layer_activations=True,
            dpi=96,
        )
        # plot_model returns silently without a file under IPython when Graphviz is missing.
        data = out.read_bytes() if out.exists() else b""
    if not data.startswith(PNG_SIGNATURE):
        raise OSError("keras.utils.plot_model produced no PNG file")
    return data


def model_diagram(model, force_fallback: bool = False) -> Diagram:
    """Render the model's architecture with shapes and layer names.

    Args:
        model: a built Keras model.
        force_fallback: skip Graphviz and draw with matplotlib.

    Returns:
        A ``Diagram``; its ``method`` says which renderer was used.
    """
    note = "matplotlib fallback requested"
    if not force_fallback:
        try:
            return Diagram(_plot_model_png(model), "graphviz")
        # Any failure of the optional Graphviz path (no pydot, no `dot`, a pydot error) must
        # fall back to the built-in drawing rather than leave the report without a diagram.
        except Exception as e:  # noqa: BLE001
            note = f"Graphviz diagram unavailable ({type(e).__name__}: {e}); drawn with matplotlib"
    fig = fallback_figure(layer_rows(model), title=model.name)
    return Diagram(png_bytes(fig), "matplotlib", note)
