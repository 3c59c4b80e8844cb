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
    """List runs under ROOT (default ./runs) with dataset, preset, epochs and test accuracy."""
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
    click.echo(f"{'run':<52} {'dataset':<14} {'preset':<9} {'epochs':>6} {'status':<11} {'test acc':>8}")
    for r in runs:
        m = r.manifest
        acc = m.get("test_accuracy")
        click.echo(
            f"{r.path.name:<52} {m.get('dataset', {}).get('name', '?'):<14} "
            f"{m.get('preset', '?'):<9} {m.get('epochs_done', 0):>6} {r.status:<11} "
            f"{'' if acc is None else f'{acc:.4f}':>8}"
        )


COMMANDS = [evaluate_cmd, runs_cmd]
