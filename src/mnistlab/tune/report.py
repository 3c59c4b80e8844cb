"""``tune.html``: one self-contained page about a study (figures as PNG data URIs, no network).

The figures are Optuna's own matplotlib visualisations: optimisation history, intermediate values
(the learning curves the pruner judged), parameter importances, parallel coordinates and slices.
"""

from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path

from mnistlab.files import write_text
from mnistlab.tune import folder as files

FIGURES = (
    ("Optimisation history", "plot_optimization_history"),
    ("Validation accuracy per epoch (what the pruner judged)", "plot_intermediate_values"),
    ("Parameter importances", "plot_param_importances"),
    ("Parallel coordinates", "plot_parallel_coordinate"),
    ("Slice plots", "plot_slice"),
)


def _png(plot, study) -> str:
    """Run one of Optuna's matplotlib plots and return the figure as base64 PNG."""
    import matplotlib.pyplot as plt
    import numpy as np

    with warnings.catch_warnings():
        # "experimental", "few trials for this importance", "identical limits": the figure is
        # still drawn, and the page says how many trials it rests on.
        warnings.simplefilter("ignore")
        axes = plot(study)
    fig = np.ravel(axes)[0].figure
    try:
        if fig.get_figwidth() < 8:
            fig.set_size_inches(8, 4.5)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)  # Optuna draws through pyplot, which keeps every figure until closed
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(study) -> list[dict]:
    import optuna.visualization.matplotlib as vis

    out = []
    for title, name in FIGURES:
        try:
            out.append({"title": title, "png": _png(getattr(vis, name), study)})
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials, ...
            out.append({"title": title, "png": None, "note": f"Not available yet: {e}"})
    return out


def _trial_rows(study) -> list[dict]:
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        rows.append({
            "number": t.number, "state": t.state.name.lower(),
            "value": "" if t.value is None else f"{t.value:.4f}",
            "epochs": len(t.intermediate_values),
            "params": ", ".join(f"{k}={_short(v)}" for k, v in t.params.items()),
            "reason": t.user_attrs.get("fail_reason", ""),
        })
    return rows


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_report(folder: str | Path, study, summary: dict) -> Path:
    """Write ``tune.html`` in the study folder and return its path."""
    import jinja2

    folder = Path(folder)
    env = jinja2.Environment(loader=jinja2.PackageLoader("mnistlab.tune", "templates"),
                             autoescape=True)
    best = folder / "best.toml"
    retrained = summary.get("retrained") or {}
    html = env.get_template("tune.html").render(
        summary=summary, figures=_figures(study), trials=_trial_rows(study),
        best_toml=best.read_text(encoding="utf-8") if best.is_file() else None,
        run_link=f"{retrained['run']}/report.html" if retrained.get("run") else "",
    )
    path = folder / "tune.html"
    write_text(path, html)
    return path


def rebuild_report(folder: str | Path, storage: str | None = None) -> Path:
    """Rebuild ``tune.html`` of a study folder from its storage (``tune.json`` names it).

    Args:
        folder: a ``runs/tune-<study>`` folder.
        storage: the storage URL, when ``tune.json`` hides its password.

    Raises:
        TuneError: not a study folder. StorageError: the storage cannot be opened.
    """
    import optuna

    from mnistlab.tune.errors import StorageError
    from mnistlab.tune.storage import opened

    summary = files.read_summary(folder)
    url = storage or summary.get("storage", "")
    if "***" in url and storage is None:
        raise StorageError(f"{folder}'s storage {url} needs its password: pass --storage URL")
    with opened(url) as storage:
        study = optuna.load_study(study_name=summary["study"], storage=storage)
        return build_report(folder, study, summary)
