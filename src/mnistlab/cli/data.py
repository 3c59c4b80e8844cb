"""``mnistlab data ...``: look at and fetch datasets."""

from __future__ import annotations

import click


@click.group("data")
def data_group():
    """Inspect and download datasets."""


@data_group.command("info")
@click.argument("name", required=False, default=None)
@click.option(
    "--data", "path", type=click.Path(), help="Your own .npz, IDX directory or image folder."
)
def info(name, path):
    """Print shapes, class counts, source and sha256 of a dataset (NAME or --data PATH)."""
    from mnistlab.data import load_dataset
    from mnistlab.data.describe import describe

    if not name and not path:
        raise click.UsageError("give a dataset NAME (e.g. fashion_mnist) or --data PATH")
    click.echo(describe(load_dataset(name or "mnist", path=path)))


COMMANDS = [data_group]
