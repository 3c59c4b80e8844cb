"""Every figure of the tutorial and one self-contained ``report.html``, built from a run directory.

The report embeds its images as base64 data URIs and its CSS inline: it needs no network, no
JavaScript and no other file, so it can be mailed or opened from disk. Every string that comes from
the run (class names, the command line, file names) is HTML-escaped by the templates: a run
directory is untrusted.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from mnistlab import plots
from mnistlab.errors import RunError
from mnistlab.files import load_npz

FIGURES = (
    "samples",
    "model",
    "curves",
    "confusion",
    "prediction",
    "mistakes",
    "confidence",
    "weights",
)
OPTIONAL_FIGURES = ("augmented",)  # only for runs trained with augmentation


def _arrays(run, name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    path = run.file(name)
    try:
        arrays = load_npz(path)
    except FileNotFoundError:
        raise RunError(
            f"{path} is missing; the run is incomplete. Train it again with `mnistlab train`"
        ) from None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise RunError(f"{path} is unreadable ({e}); the run directory is damaged") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise RunError(
            f"{path} lacks the arrays {missing} (has {list(arrays)}); the run directory is "
            "damaged. Train it again with `mnistlab train`"
        )
    return arrays


def _first_dense_kernel(model):
    for layer in model.layers:
        if type(layer).__name__ == "Dense":
            return layer.name, np.asarray(layer.get_weights()[0])
    return None, None


def build_figures(
    run, model, force_diagram_fallback: bool = False
) -> tuple[dict[str, bytes], dict]:
    """Draw every figure of a run.

    Args:
        run: a ``mnistlab.runs.Run``.
        model: the run's Keras model.
        force_diagram_fallback: draw the model with matplotlib even if Graphviz is available.

    Returns:
        ``(pngs, notes)``: PNG bytes by figure name (``FIGURES``, plus ``augmented`` for a run
        trained with augmentation; ``weights`` only for image
        inputs whose first Dense layer sees every pixel) and a note per figure, if any.

    Raises:
        RunError: ``samples.npz`` or ``predictions.npz`` is missing, unreadable or incomplete.
    """
    from mnistlab.diagram import model_diagram

    names = run.metrics.get("class_names") or run.manifest["dataset"]["class_names"]
    samples = _arrays(run, "samples.npz", ("images", "labels", "indices"))
    pred = _arrays(run, "predictions.npz", ("images", "labels", "probabilities"))
    images, labels, probs = pred["images"], pred["labels"], pred["probabilities"]
    figs = {
        "samples": plots.samples_figure(
            samples["images"], samples["labels"], samples["indices"], names
        ),
        "curves": plots.curves_figure(run.history),
        "confusion": plots.confusion_figure(run.metrics["confusion_matrix"], names),
        "prediction": plots.prediction_figure(images[0], probs[0], names, true_label=labels[0]),
        "mistakes": plots.mistakes_figure(images, labels, probs, names),
        "confidence": plots.confidence_figure(probs, labels),
    }
    notes = {}
    if run.config.augment.enabled:
        from mnistlab.augment import preview

        variants, epochs = preview(samples["images"], run.config.augment, run.config.seed,
                                   run.config.train.epochs)
        figs["augmented"] = plots.augmented_figure(samples["images"], variants,
                                                   samples["labels"], names, epochs)
    layer, kernel = _first_dense_kernel(model)
    shape = tuple(images.shape[1:])
    if kernel is not None and kernel.shape[0] == int(np.prod(shape)):
        figs["weights"] = plots.weights_figure(kernel, shape, layer_name=layer)
    else:
        notes["weights"] = "not drawn: the first Dense layer does not see the raw image pixels"
    pngs = {name: plots.png_bytes(fig) for name, fig in figs.items()}
    diagram = model_diagram(model, force_fallback=force_diagram_fallback)
    pngs["model"] = diagram.png
    notes["model"] = (
        "drawn by keras.utils.plot_model (Graphviz)"
        if diagram.method == "graphviz"
        else diagram.note
    )
    return pngs, notes


def build_report(run_dir: str | Path, force_diagram_fallback: bool = False) -> Path:
    """Write every figure (``<name>.png``) and ``report.html`` into a complete run directory.

    Each file is written atomically. Needs nothing but the run directory.

    Args:
        run_dir: a run directory made by ``mnistlab train``.
        force_diagram_fallback: draw the model with matplotlib even if Graphviz is available.

    Returns:
        The path of ``report.html``.

    Raises:
        RunError: the directory is missing, not a run, incomplete or damaged.
        ModelError: the model file fails its sha256 or safety checks.
    """
    from mnistlab.diagram import layer_rows
    from mnistlab.files import write_bytes, write_text
    from mnistlab.report.page import render_report
    from mnistlab.runs import load_run

    run = load_run(run_dir)
    model = run.load_model()
    pngs, notes = build_figures(run, model, force_diagram_fallback)
    for name, data in pngs.items():
        write_bytes(run.file(f"{name}.png"), data)
    for name in set(FIGURES + OPTIONAL_FIGURES) - set(pngs):
        run.file(f"{name}.png").unlink(missing_ok=True)  # never leave a stale figure behind
    out = run.file("report.html")
    write_text(out, render_report(run, layer_rows(model), pngs, notes))
    return out
