"""Compare runs: the config keys that differ, the metrics, and the validation curves overlaid.

Writes ``compare.html`` (self-contained, rendered with the report's template kit) and
``compare.png`` into a new folder ``runs/compare-<time>/`` (or the folder the caller names);
returns a ``Comparison`` whose ``table()`` is the text the CLI prints. Runs are named by their
label and seed (``tutorial+epochs=5-seed111``), not by their long directory names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from mnistlab.errors import RunError
from mnistlab.report.kit import num, render
from mnistlab.report.parity import flatten
from mnistlab.runs import fresh_folder

METRIC_HEADERS = ["run", "dataset", "status", "epochs", "test acc", "test loss", "time"]


@dataclass
class Comparison:
    """The outcome of ``compare_runs``.

    Attributes:
        labels: one short name per run (``short_names``); the page maps each to its directory.
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


def short_names(runs) -> list[str]:
    """A short name per run: its label and seed, e.g. ``tutorial+epochs=5-seed111``.

    The label is the preset plus the settings that differ from it (``mnistlab.config.label``),
    less the settings every compared run shares: only what tells the runs apart. The dataset is
    added when the runs differ in it; if names still clash, each gets a letter (``A: tutorial-seed1``,
    ``B: tutorial-seed1``), and the page's legend lists the directories.
    """
    from mnistlab.config import label

    parts = [label(r.config, limit=10_000).split("+") for r in runs]
    shared = set.intersection(*(set(p[1:]) for p in parts))
    datasets = [str(r.manifest.get("dataset", {}).get("name", "?")) for r in runs]
    names = [
        "+".join([p[0], *(x for x in p[1:] if x not in shared)])
        + (f"-{d}" if len(set(datasets)) > 1 else "")
        + f"-seed{r.config.seed}"
        for p, r, d in zip(parts, runs, datasets, strict=True)
    ]
    if len(set(names)) == len(names):
        return names
    return [f"{_letter(i)}: {n}" for i, n in enumerate(names)]


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else str(i + 1)


def new_compare_dir(root: str | Path = "runs", now: dt.datetime | None = None) -> Path:
    """Create a new, empty ``<root>/compare-<YYYYmmdd-HHMMSS>`` folder and return it.

    ``os.mkdir`` is exclusive: an existing comparison is never overwritten; a clash within the
    same second gets ``-2``, ``-3``... appended.

    Raises:
        RunError: ``root`` cannot hold a new folder.
    """
    root = Path(root)
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    try:
        root.mkdir(parents=True, exist_ok=True)
        return fresh_folder(root, f"compare-{stamp}")
    except OSError as e:
        raise RunError(
            f"cannot create a comparison folder under {root}: {e.strerror or e}. "
            "Pass --out a folder you can write to."
        ) from None


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


def compare_runs(paths, out: str | Path | None = None, root: str | Path = "runs") -> Comparison:
    """Compare two or more run directories and write ``compare.html`` and ``compare.png``.

    Runs that did not finish are accepted (their curves so far are shown, metrics are ``-``).

    Args:
        paths: run directories.
        out: folder for the two files (created if missing; files in it are replaced). Default:
            a new folder ``<root>/compare-<time>/`` (``new_compare_dir``), never an old one.
        root: where the default folder goes.

    Returns:
        A ``Comparison``.

    Raises:
        RunError: fewer than two runs, a path that is not a run directory, or an unusable
            output folder.
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
    labels = short_names(runs)
    diff = config_differences([flatten(r.config.model_dump()) for r in runs])
    metrics = [_metric_row(label, r) for label, r in zip(labels, runs, strict=True)]

    if out is None:
        out = new_compare_dir(root)
    else:
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
