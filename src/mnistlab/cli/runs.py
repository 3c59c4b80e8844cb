"""``mnistlab evaluate`` and ``mnistlab runs``."""

from __future__ import annotations

import json

import click


@click.command("evaluate")
@click.argument("run", required=False, type=click.Path())
@click.option("--model", "model_path", type=click.Path(), help="A .keras/.h5 file saved by any Keras code.")
@click.option("--dataset", help="Evaluate on this dataset instead of the run's.")
@click.option("--data", "data_path", type=click.Path(), help="Evaluate on your own data.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics as JSON.")
def evaluate_cmd(run, model_path, dataset, data_path, as_json):
    """Evaluate a run's saved model (or --model FILE) on the test set."""
    from mnistlab.evaluation import evaluate

    metrics, text = evaluate(run, model_path=model_path, dataset=dataset, data_path=data_path)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    click.echo(f"Test loss: {metrics['test_loss']:.4f}")
    click.echo(f"Test accuracy: {metrics['test_accuracy']:.4f}")
    click.echo(text)


@click.command("runs")
@click.argument("root", required=False, default="runs", type=click.Path())
def runs_cmd(root):
    """List runs under ROOT (default ./runs): data, preset, model, optimizer, lr, epochs, accuracy."""
    from mnistlab.runs import list_runs
    from mnistlab.tune.folder import list_studies

    runs, studies = list_runs(root), list_studies(root)
    if not runs and not studies:
        click.echo(f"No runs under {root}. Start one with `mnistlab train`.")
        return
    for path, s in studies:  # `mnistlab tune` studies: runs/tune-<study>/tune.json
        best = f"best val acc {s['best']['val_accuracy']:.4f}" if s.get("best") else "no best yet"
        test = (s.get("retrained") or {}).get("test_accuracy")
        click.echo(f"{path.name:<52} study, {sum(s.get('trials', {}).values())} trials, {best}"
                   + ("" if test is None else f", retrained test acc {test:.4f}"))
    if runs:
        click.echo(_aligned([_HEADER, *(_row(r) for r in runs)]))


_HEADER = ("run", "dataset", "preset", "model", "optimizer", "lr", "epochs", "status", "test acc")
_RIGHT = {"lr", "epochs", "test acc"}  # numbers line up on their last digit


def _row(run) -> tuple[str, ...]:
    """One run's cells; what its config.toml cannot tell (missing, broken) shows as ``?``."""
    from mnistlab.errors import MnistlabError

    m = run.manifest
    try:
        cfg = run.config
        model, optimizer, lr = cfg.model.kind, cfg.train.optimizer, f"{cfg.train.learning_rate:g}"
    except (MnistlabError, OSError):
        model = optimizer = lr = "?"
    dataset = m.get("dataset")
    done, planned = m.get("epochs_done", 0), m.get("epochs_planned")
    acc = m.get("test_accuracy")
    return (run.path.name, str(dataset.get("name", "?") if isinstance(dataset, dict) else "?"),
            str(m.get("preset", "?")), model, optimizer, lr,
            str(done) if planned in (None, done) else f"{done}/{planned}", run.status,
            "" if not isinstance(acc, int | float) else f"{acc:.4f}")


def _aligned(rows) -> str:
    """Rows of cells as text columns, each as wide as its longest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    return "\n".join(
        " ".join(cell.rjust(w) if name in _RIGHT else cell.ljust(w)
                 for cell, w, name in zip(row, widths, _HEADER, strict=True))
        for row in rows
    )


COMMANDS = [evaluate_cmd, runs_cmd]
