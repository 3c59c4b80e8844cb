"""``mnistlab data ...``: list, inspect and fetch datasets."""

from __future__ import annotations

import itertools
import sys

import click

_mirror_option = click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="URL",
    help="Extra download origin (base URL or full URL), tried first. Repeatable.",
)


def progress_bar():
    """Return a download progress callback drawing click's progress bar on stderr.

    None when stderr is not a terminal: logs and pipes get no bar at all.
    """
    return _DownloadBar() if sys.stderr.isatty() else None


class _DownloadBar:
    """``progress(name, bytes_done, bytes_total_or_None)``: one ``click.progressbar`` per file."""

    def __init__(self):
        self.bar, self.name, self.done = None, None, 0

    def __call__(self, name: str, done: int, total: int | None) -> None:
        if self.bar is None or name != self.name:
            self.close()
            # Without a length (no Content-Length) click draws an unbounded, moving bar.
            self.bar = click.progressbar(
                length=total, iterable=None if total else itertools.count(), label=name,
                file=sys.stderr, width=30, fill_char="#", empty_char=".", show_eta=False,
                bar_template="%(label)s [%(bar)s] %(info)s",
                item_show_func=lambda _: f"{self.done / 1e6:.1f} MB",
            )
            self.name, self.done = name, 0
        step, self.done = done - self.done, done
        self.bar.update(step)
        if total and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None


@click.group("data")
def data_group():
    """List, inspect and download datasets."""


@data_group.command("list")
def list_():
    """List the named datasets and whether each is usable offline now."""
    from mnistlab.data.sources import DESCRIPTIONS, availability

    for name, text in DESCRIPTIONS.items():
        ok, where = availability(name)
        click.echo(f"{name:<14} {text}")
        click.echo(f"{'':<14} offline now: {'yes' if ok else 'no'} ({where})")


@data_group.command("info")
@click.argument("name", required=False, default=None)
@click.option(
    "--data", "path", type=click.Path(), help="Your own .npz, IDX directory or image folder."
)
@_mirror_option
def info(name, path, mirrors):
    """Print shapes, class counts, source and sha256 of a dataset (NAME or --data PATH)."""
    from mnistlab.data import load_dataset
    from mnistlab.data.describe import describe

    if not name and not path:
        raise click.UsageError("give a dataset NAME (e.g. fashion_mnist) or --data PATH")
    if name and path:
        raise click.UsageError("give either a dataset NAME or --data PATH, not both")
    ds = load_dataset(name or "mnist", path=path, mirrors=mirrors, progress=progress_bar())
    click.echo(describe(ds))


@data_group.command("fetch")
@click.argument("name")
@_mirror_option
def fetch(name, mirrors):
    """Download a named dataset into the Keras cache (if needed), verify it, print path + sha256."""
    from mnistlab.data.sources import fetch_named

    for path, sha256 in fetch_named(name, mirrors=mirrors, progress=progress_bar()):
        click.echo(f"{path}  sha256 {sha256}")


COMMANDS = [data_group]
