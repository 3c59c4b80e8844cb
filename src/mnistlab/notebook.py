"""mnistlab in Jupyter: a progress bar that updates in place, and a run's HTML summary.

Nothing here imports IPython at import time; ``progress`` falls back to one printed line per epoch
outside a notebook, so the same code runs as a script.
"""

from __future__ import annotations

import html
import time


class NotebookProgress:
    """A ``progress`` callback for ``mnistlab.train`` that redraws one HTML bar per run.

    In a notebook the bar (epoch n of N, elapsed time, ETA, last loss and accuracies) is one
    display that updates in place, instead of one printed line per carriage return. Elsewhere it
    prints one line per epoch.
    """

    def __init__(self):
        self._handle = None
        self._t0 = time.perf_counter()
        self._shown = 0.0  # when a step was last drawn

    def __call__(self, epoch: int, epochs: int, logs: dict) -> None:
        text = self.render(epoch, epochs, logs, time.perf_counter() - self._t0)
        if not self._show(text):
            print(f"epoch {epoch}/{epochs} - loss {logs['loss']:.4f} - "
                  f"val_accuracy {logs['val_accuracy']:.4f}")

    def step(self, epoch: int, epochs: int, step: int, steps: int, logs: dict | None) -> None:
        """Inside a long epoch (a convnet's), redraw the bar at most every half second with the
        step count and the running loss and accuracy; nothing outside a notebook."""
        now = time.perf_counter()
        if not step or now - self._shown < 0.5 or not logs:
            return
        self._shown = now
        figures = " · ".join(f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy") if k in logs)
        self._show(f'<div class="mnistlab-progress"><progress value="{step}" max="{steps}" '
                   f'style="width:16em;vertical-align:middle"></progress> epoch {epoch}/{epochs}'
                   f" · step {step}/{steps} · {html.escape(figures)}</div>")

    def _show(self, text: str) -> bool:
        """Draw ``text`` in this bar's display; False outside a notebook."""
        try:
            from IPython import get_ipython
            from IPython.display import HTML, display
        except ImportError:
            return False
        if get_ipython() is None:
            return False
        if self._handle is None:
            self._handle = display(HTML(text), display_id=True)
        else:
            self._handle.update(HTML(text))
        return True

    @staticmethod
    def render(epoch: int, epochs: int, logs: dict, elapsed: float) -> str:
        """The bar as HTML: a <progress> element and the epoch's figures."""
        eta = elapsed / epoch * (epochs - epoch) if epoch else 0.0
        figures = (f"loss {logs['loss']:.4f} · accuracy {logs['accuracy']:.4f} · "
                   f"val_loss {logs['val_loss']:.4f} · val_accuracy {logs['val_accuracy']:.4f}")
        return (f'<div class="mnistlab-progress"><progress value="{epoch}" max="{epochs}" '
                f'style="width:16em;vertical-align:middle"></progress> '
                f"epoch {epoch}/{epochs} · {elapsed:.1f}s elapsed, ETA {eta:.1f}s · "
                f"{html.escape(figures)}</div>")


def progress() -> NotebookProgress:
    """A fresh progress callback: ``mnistlab.train(config, progress=mnistlab.progress())``."""
    return NotebookProgress()


def run_html(run) -> str:
    """A compact HTML summary of a ``Run``: name, status, data, model, training and test figures."""
    m, cfg = run.manifest, _config_or_none(run)
    metrics = run.metrics
    rows = [
        ("status", m.get("status", "?")),
        ("dataset", (m.get("dataset") or {}).get("name", "?")),
        ("preset", m.get("preset", "?")),
        ("seed", m.get("seed", "?")),
        ("epochs", f"{m.get('epochs_done', '?')} of {m.get('epochs_planned', '?')}"),
    ]
    if cfg is not None:
        rows += [("model", f"{cfg.model.kind} ({m.get('params', '?'):,} parameters)"
                  if isinstance(m.get("params"), int) else cfg.model.kind),
                 ("optimizer", f"{cfg.train.optimizer}, learning rate {cfg.train.learning_rate}")]
    if "test_accuracy" in metrics:
        rows.append(("test accuracy", f"{metrics['test_accuracy']:.4f}"))
        rows.append(("test loss", f"{metrics['test_loss']:.4f}"))
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in rows)
    report = run.path / "report.html"
    link = (f"<div><a href='{html.escape(report.as_posix())}' target='_blank'>report.html</a></div>"
            if report.exists() else "")
    return (f"<div class='mnistlab-run'><strong>mnistlab run</strong> "
            f"<code>{html.escape(run.path.name)}</code><table>{body}</table>{link}</div>")


def study_html(folder, summary: dict) -> str:
    """A compact HTML summary of a study folder: trials by state, the best trial and its
    parameters, the retrained run's test accuracy, and links to tune.html and the run's report."""
    from pathlib import Path

    folder = Path(folder)
    trials = summary.get("trials") or {}
    best = summary.get("best") or {}
    retrained = summary.get("retrained") or {}
    rows = [
        ("dataset", summary.get("dataset", "?")),
        ("preset", summary.get("preset", "?")),
        ("trials", ", ".join(f"{n} {state}" for state, n in sorted(trials.items())) or "none"),
    ]
    if best:
        rows.append(("best trial", f"#{best['number']}: validation accuracy "
                     f"{best['val_accuracy']:.4f}"))
        rows += [(f"  {k}", _short(v)) for k, v in sorted(best.get("params", {}).items())]
    if retrained.get("test_accuracy") is not None:
        rows.append(("retrained test accuracy", f"{retrained['test_accuracy']:.4f}"))
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in rows)
    links = [(folder / "tune.html", "tune.html")]
    if retrained.get("run"):
        links.append((folder / retrained["run"] / "report.html", "retrained run's report"))
    anchors = " · ".join(f"<a href='{html.escape(p.as_posix())}' target='_blank'>"
                         f"{html.escape(text)}</a>" for p, text in links if p.exists())
    return (f"<div class='mnistlab-study'><strong>mnistlab study</strong> "
            f"<code>{html.escape(str(summary.get('study', folder.name)))}</code>"
            f"<table>{body}</table><div>{anchors}</div></div>")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _config_or_none(run):
    try:
        return run.config
    except Exception:  # a broken config.toml must not break the summary; the status shows it
        return None
