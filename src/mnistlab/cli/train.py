"""``mnistlab train`` and ``mnistlab rerun``."""

from __future__ import annotations

import sys

import click


def _progress(quiet: bool):
    """Epoch lines (and a bar inside long epochs on a terminal), or nothing with --quiet."""
    from mnistlab.cli.progress import EpochProgress

    return None if quiet else EpochProgress()


def _fell_back(name: str, error: Exception, next_name: str) -> None:
    click.echo(f"Cannot use dataset {name!r}: {error}", err=True)
    click.echo(f"Falling back to {next_name!r} (asked for with --fallback).", err=True)


@click.command("train")
@click.option("--preset", help="Preset: tutorial (default), quick, adam, cnn (the keras-io "
              "convnet), best (the most accurate convnet in 10 minutes).")
@click.option("--config", "config_file", type=click.Path(), help="TOML config file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.epochs=3 (repeatable).")
@click.option("--dataset", help="mnist (default), fashion_mnist, digits, mnist_sample.")
@click.option("--data", "data_path", type=click.Path(), help="Your own .npz, IDX dir or image folder.")
@click.option("--epochs", type=int, help="Number of epochs (tutorial: 50).")
@click.option("--batch-size", type=int, help="Batch size (tutorial: 128).")
@click.option("--seed", type=int, help="Seed for split, initialisation and shuffling (tutorial: 111).")
@click.option("--loop", type=click.Choice(["fast", "fit"]), help="Training loop implementation.")
@click.option("--devices", metavar="N|all",
              help="Data-parallel training on N devices (JAX); batch size must divide evenly.")
@click.option("--out", default="runs", show_default=True, type=click.Path(), help="Runs folder.")
@click.option("--fallback", multiple=True, metavar="NAME",
              help="Dataset to use if the chosen one cannot be had (repeatable; said out loud).")
@click.option("--report/--no-report", default=None, help="Build figures and report.html (default on).")
@click.option("--quiet", is_flag=True, help="No per-epoch lines.")
@click.option("--resume", type=click.Path(), metavar="RUN",
              help="Continue an interrupted run from its last checkpoint (other options ignored).")
@click.option("--coordinator", metavar="HOST:PORT",
              help="Join a multi-process job: process 0's address and port (docs/multihost.md).")
@click.option("--num-processes", type=int, metavar="N", help="Processes in the job.")
@click.option("--process-id", type=int, metavar="I", help="This process, 0..N-1 (0 writes files).")
def train_cmd(preset, config_file, overrides, dataset, data_path, epochs, batch_size, seed, loop,
              devices, out, fallback, report, quiet, resume, coordinator, num_processes,
              process_id):
    """Train a model (the tutorial's MLP unless a preset or config says otherwise) and write a run
    directory (runs/<time>-<preset>-<data>-seed<N>).

    Ctrl-C or SIGTERM stops at the end of the current epoch after saving a checkpoint;
    `mnistlab train --resume RUN` finishes the run with the same result as an uninterrupted one.
    """
    from mnistlab.cli.data import progress_bar
    from mnistlab.cluster import is_job_child, job_from, supervise
    from mnistlab.config import load_config
    from mnistlab.data import load_with_fallback
    from mnistlab.training import train

    job = job_from(coordinator, num_processes, process_id)
    if job and not is_job_child():  # the job runs in a child; its breakdown becomes one error
        sys.exit(supervise(sys.argv[1:], job))
    progress = _progress(quiet)
    if resume:
        _done(train(resume=resume, command=sys.argv, report=report, progress=progress, job=job), job)
        return
    cfg = load_config(preset, config_file, overrides, data__dataset=dataset, data__path=data_path,
                      train__epochs=epochs, train__batch_size=batch_size, seed=seed,
                      train__loop=loop, train__devices=devices)
    ds = load_with_fallback([cfg.data.dataset, *fallback], cfg.data.path, cfg.data.mirrors,
                            progress=progress_bar(), on_fallback=_fell_back)
    _done(train(cfg, dataset=ds, out=out, command=sys.argv, report=report, progress=progress,
                job=job), job)


def _done(run, job=None) -> None:
    if job and not job.writes_files:
        click.echo(f"Process {job.process_id} of {job.num_processes} done; process 0 wrote the "
                   "run directory.")
        return
    m = run.metrics
    if (warning := run.manifest.get("learning", {}).get("message")) is not None:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(f"Test accuracy: {m['test_accuracy']:.4f} - test loss: {m['test_loss']:.4f}")
    click.echo(f"Run directory: {run.path}")
    _report_line(run)


def _report_line(run) -> None:
    """The last line of ``train`` and ``rerun``: where to look, when there is a report."""
    if (page := run.path / "report.html").is_file():
        click.echo(f"Report: {page}")


@click.command("rerun")
@click.argument("run", type=click.Path())
@click.option("--out", type=click.Path(), help="Folder for the new run (default: next to RUN).")
@click.option("--report/--no-report", default=None,
              help="Build figures and report.html (default: as RUN's config says).")
@click.option("--quiet", is_flag=True, help="No per-epoch lines.")
def rerun_cmd(run, out, report, quiet):
    """Train again from RUN's recorded config; report whether the result is bit-identical."""
    from mnistlab.training import rerun

    new, rep = rerun(run, out=out, progress=_progress(quiet), report=report)
    click.echo(f"New run: {new.path}")
    click.echo(f"Weights bit-identical: {'yes' if rep['weights_identical'] else 'NO'}")
    click.echo(f"Metrics identical:     {'yes' if rep['metrics_identical'] else 'NO'} "
               f"(test accuracy {rep['old_accuracy']:.4f} -> {rep['new_accuracy']:.4f})")
    if rep["note"] and not (rep["weights_identical"] and rep["metrics_identical"]):
        click.echo(f"Why: {rep['note']}")
    _report_line(new)
    if not (rep["weights_identical"] and rep["metrics_identical"]):
        sys.exit(1)


COMMANDS = [train_cmd, rerun_cmd]
