"""``mnistlab tune``: hyper-parameter search with Optuna."""

from __future__ import annotations

import os
import sys

import click


def _event(event: dict) -> None:
    if event["kind"] == "retrain":
        click.echo(f"Retraining the best configuration (trial {event['number']}, validation "
                   f"accuracy {event['value']:.4f}) as an ordinary run...")
        return
    state = event["state"].lower()
    value = "" if event["value"] is None else f" val_accuracy {event['value']:.4f}"
    why = f" ({event['reason']})" if state == "fail" and event["reason"] else ""
    click.echo(f"Trial {event['number']} [worker {event['worker']}]: {state}{value} after "
               f"{event['epochs']} epochs, {event['seconds'] or 0:.1f}s{why}")


@click.command("tune")
@click.option("--preset", help="Base configuration: tutorial (default), quick, adam, cnn, best.")
@click.option("--space", "space", type=click.Path(), help="Search space TOML (default: the MLP space).")
@click.option("--trials", type=int, default=60, show_default=True,
              help="Stop when the study holds N trials (running again continues up to N).")
@click.option("--timeout", type=float, help="Start no new trial after S seconds.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Worker processes on this machine, sharing the cores equally.")
@click.option("--storage", help="Study database URL (default sqlite:///RUNS/tune-STUDY/study.db; "
              "postgresql://... to share a study between machines).")
@click.option("--study", help="Study name (default PRESET-DATASET).")
@click.option("--dataset", help="mnist (default), fashion_mnist, digits, mnist_sample.")
@click.option("--data", "data_path", type=click.Path(), help="Your own .npz, IDX dir or image folder.")
@click.option("--seed", type=int, help="Seed of the split, the models and the sampler.")
@click.option("--out", default="runs", show_default=True, type=click.Path(), help="Runs folder.")
@click.option("--retrain/--no-retrain", default=True, show_default=True,
              help="Retrain the best configuration as a run when the search ends.")
@click.option("--report", "report_dir", type=click.Path(), metavar="DIR",
              help="Only rebuild DIR/tune.html (a runs/tune-STUDY folder) and exit.")
def tune_cmd(preset, space, trials, timeout, workers, storage, study, dataset, data_path, seed,
             out, retrain, report_dir):
    """Search hyper-parameters with Optuna (TPE, median pruning), then retrain the best.

    Writes runs/tune-STUDY/ (study.db, trials.csv, best.toml, tune.html) and an ordinary run
    directory for the best configuration. Ctrl-C or SIGTERM stops after the current trial; the
    same command continues the study.
    """
    try:
        import optuna
    except ImportError:
        raise click.ClickException("mnistlab tune needs Optuna: pip install 'mnistlab[tune]'"
                                   ) from None

    from mnistlab.config import load_config
    from mnistlab.tune.report import rebuild_report
    from mnistlab.tune.study import tune

    if report_dir:
        click.echo(f"Report: {rebuild_report(report_dir, storage)}")
        return
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial comes from _event
    cfg = load_config(preset, data__dataset=dataset, data__path=data_path, seed=seed)
    result = tune(cfg, space=space, trials=trials, timeout=timeout, workers=workers,
                  storage=storage, study=study, out=out, command=sys.argv, progress=_event,
                  retrain=retrain)
    _summary(result)


def _summary(result) -> None:
    s = result.summary
    counts = ", ".join(f"{n} {state}" for state, n in s["trials"].items())
    click.echo(f"Study {s['study']}: {counts} ({result.ran} new; {s['workers']} worker(s), "
               f"{s['threads_per_worker']} thread(s) each).")
    if s["best"]:
        click.echo(f"Best trial {s['best']['number']}: validation accuracy "
                   f"{s['best']['val_accuracy']:.4f}")
    if s["retrained"] and not result.interrupted:
        run = os.path.normpath(result.folder / s["retrained"]["run"])
        click.echo(f"Retrained run: {run} - test accuracy "
                   f"{s['retrained']['test_accuracy']:.4f}")
    click.echo(f"Study folder: {result.folder} (tune.html, best.toml, trials.csv)")
    if result.interrupted:
        click.echo("Stopped by a signal; run the same command again to continue the study.",
                   err=True)
        sys.exit(130)


COMMANDS = [tune_cmd]
