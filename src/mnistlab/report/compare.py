"""Compare runs: the config keys that differ, the metrics, and the validation curves overlaid.

Writes ``compare.html`` (self-contained, rendered with the report's template kit) and
``compare.png``; returns a ``Comparison`` whose ``table()`` is the text the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnistlab.errors import RunError
from mnistlab.report.kit import num, render
from mnistlab.report.parity import flatten

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


def config_differences(configs: list[dict]) -> list[tuple[str, list[str]]]:
    """``(key, [repr of the value per run])`` for each flattened config key whose values differ."""
    keys = sorted(set().union(*configs))
    rows = [(k, [repr(c.get(k, "-")) for c in configs]) for k in keys]
    return [(k, values) for k, values in rows if len(set(values)) > 1]


def _metric_row(label: str, run) -> list[str]:
    m, met = run.manifest, run.metrics
    return [
        label,
        str(m.get("dataset", {}).get("name", "?")),
        run.status,
        str(m.get("epochs_done", "-")),
        num(met.get("test_accuracy"), ".4f"),
        num(met.get("test_loss"), ".4f"),
        num(m.get("duration_s"), ".1f") + " s",
    ]


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
    from mnistlab.plots import compare_curves_figure, png_bytes
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
    diff = config_differences([flatten(r.config.model_dump()) for r in runs])
    metrics = [_metric_row(label, r) for label, r in zip(labels, runs, strict=True)]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = png_bytes(compare_curves_figure([r.history for r in runs], labels))
    png_path, html_path = out / "compare.png", out / "compare.html"
    write_bytes(png_path, png)
    result = Comparison(labels, diff, metrics, html_path, png_path)
    page = render(
        "compare.html.j2",
        comparison=result,
        directories=[[label, r.path] for label, r in zip(labels, runs, strict=True)],
        metric_headers=METRIC_HEADERS,
        diff_rows=[[k, *v] for k, v in diff],
        png=png,
    )
    write_text(html_path, page)
    return result
