"""Compare runs: the config keys that differ, the metrics, and the validation curves overlaid.

Writes ``compare.html`` (self-contained, like the report) and ``compare.png``; returns a
``Comparison`` whose ``table()`` is the text the CLI prints.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from mnistlab.errors import RunError
from mnistlab.report import CSS, esc, flatten

METRIC_HEADERS = ["run", "dataset", "status", "epochs", "test acc", "test loss", "time"]


@dataclass
class Comparison:
    """The outcome of ``compare_runs``.

    Attributes:
        labels: one short name per run (its directory name, or the path if names clash).
        config_diff: ``(key, [value per run])`` for every config key whose values differ.
        metrics: one row per run, matching ``METRIC_HEADERS``.
        html_path: the written ``compare.html``.
        png_path: the written ``compare.png``.
    """

    labels: list[str]
    config_diff: list[tuple[str, list[str]]]
    metrics: list[list[str]]
    html_path: Path
    png_path: Path

    def table(self) -> str:
        """Plain-text tables of the metrics and of the config differences."""
        out = [_text_table(METRIC_HEADERS, self.metrics)]
        if self.config_diff:
            out.append("\nconfig differences:")
            out.append(_text_table(["key", *self.labels], [[k, *v] for k, v in self.config_diff]))
        else:
            out.append("\nconfig differences: none (same configuration)")
        return "\n".join(out)


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value, spec: str) -> str:
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return "-"


def curves_overlay(histories: list[list[dict]], labels: list[str]):
    """Validation loss and accuracy of several runs on shared axes.

    Args:
        histories: per run, the rows of its ``history.csv``.
        labels: per run, the legend entry.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from matplotlib.ticker import MaxNLocator

    from mnistlab.plots.base import new_figure

    fig = new_figure(11, 4.2)
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
    ax_acc.legend(fontsize=8)
    for text in ax_acc.get_legend().get_texts():
        text.set_parse_math(False)
    return fig


def compare_runs(paths, out: str | Path = ".") -> Comparison:
    """Compare two or more run directories and write ``compare.html`` and ``compare.png`` to ``out``.

    Runs that did not finish are accepted (their curves so far are shown, metrics are ``-``).

    Args:
        paths: run directories.
        out: folder for the two files (created if missing).

    Returns:
        A ``Comparison``.

    Raises:
        RunError: fewer than two runs, or a path that is not a run directory.
    """
    from mnistlab.files import write_bytes, write_text
    from mnistlab.plots.base import png_bytes
    from mnistlab.runs import load_run

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise RunError(
            f"compare needs at least two run directories; received {len(paths)}: "
            f"{[str(p) for p in paths]}. Example: mnistlab compare runs/A runs/B"
        )
    runs = [load_run(p, require_complete=False) for p in paths]
    names = [r.path.name for r in runs]
    labels = names if len(set(names)) == len(names) else [str(r.path) for r in runs]

    configs = [flatten(r.config.model_dump()) for r in runs]
    keys = sorted(set().union(*configs))
    diff = [
        (k, [repr(c.get(k, "-")) for c in configs])
        for k in keys
        if len({repr(c.get(k, "-")) for c in configs}) > 1
    ]
    metrics = []
    for label, r in zip(labels, runs, strict=True):
        m, met = r.manifest, r.metrics
        metrics.append(
            [
                label,
                str(m.get("dataset", {}).get("name", "?")),
                r.status,
                str(m.get("epochs_done", "-")),
                _fmt(met.get("test_accuracy"), ".4f"),
                _fmt(met.get("test_loss"), ".4f"),
                _fmt(m.get("duration_s"), ".1f") + " s",
            ]
        )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = png_bytes(curves_overlay([r.history for r in runs], labels))
    png_path, html_path = out / "compare.png", out / "compare.html"
    write_bytes(png_path, png)
    result = Comparison(labels, diff, metrics, html_path, png_path)
    write_text(html_path, _html(result, runs, png))
    return result


def _html_table(headers, rows) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(result: Comparison, runs, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    diff = (
        _html_table(["key", *result.labels], [[k, *v] for k, v in result.config_diff])
        if result.config_diff
        else "<p>None: every run used the same configuration.</p>"
    )
    return "\n".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>mnistlab compare: {len(runs)} runs</title><style>{CSS}</style></head><body>",
            f"<h1>mnistlab compare: {len(runs)} runs</h1>",
            _html_table(
                ["run", "directory"],
                [[lab, r.path] for lab, r in zip(result.labels, runs, strict=True)],
            ),
            "<h2>Metrics</h2>",
            _html_table(METRIC_HEADERS, result.metrics),
            "<h2>Configuration differences</h2>",
            diff,
            "<h2>Validation curves</h2>",
            f'<img src="data:image/png;base64,{data}" alt="validation curves of every run">',
            "</body></html>\n",
        ]
    )
