"""``mnistlab report`` and ``mnistlab compare``."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("run", type=click.Path())
@click.option(
    "--no-graphviz",
    is_flag=True,
    help="Draw the model diagram with matplotlib even if Graphviz is installed.",
)
def report_cmd(run, no_graphviz):
    """Rebuild every figure and report.html of RUN from the run directory alone."""
    from mnistlab.report import build_report

    click.echo(build_report(run, force_diagram_fallback=no_graphviz))


@click.command("compare")
@click.argument("runs", nargs=-1, type=click.Path())
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder that receives compare.html and compare.png "
    "(default: a new folder runs/compare-<time>/).",
)
def compare_cmd(runs, out):
    """Compare two or more runs: config differences, metrics and validation curves."""
    from mnistlab.report import compare_runs

    result = compare_runs(runs, out=out)
    click.echo(result.table())
    click.echo(f"\nWrote {result.html_path} and {result.png_path}")


COMMANDS = [report_cmd, compare_cmd]
