"""``mnistlab export``."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("run", type=click.Path())
@click.option("--format", "formats", multiple=True, required=True, metavar="FORMAT",
              help="onnx, litert or savedmodel (repeatable).")
@click.option("--out", type=click.Path(), help="Output file (folder for savedmodel); one format only. "
              "Default: RUN/export/.")
@click.option("--images", "n_images", type=int, default=1000, show_default=True,
              help="Test images used to check the export against the Keras model.")
def export_cmd(run, formats, out, n_images):
    """Export RUN's model and check it against the Keras model in the format's own runtime.

    Refuses (exit 1) an export whose probabilities differ by more than 1e-5 or whose labels
    disagree on any test image. Each export and its figures are recorded in RUN/export.json;
    RUN's report.html, if it has one, is rebuilt to show them.
    """
    from pathlib import Path

    from mnistlab.export import export_run

    records = export_run(run, formats, out=out, n_images=n_images)
    for fmt, r in records.items():
        click.echo(f"{fmt}: {r['path']} ({r['bytes']:,} bytes) - max |Δp| {r['max_abs_diff']:.2g}, "
                   f"labels agree {r['label_agreement']:.2%} on {r['n_images']} images "
                   f"({r['runtime']})")
    if (page := Path(run) / "report.html").is_file():
        click.echo(f"Report: {page}")


COMMANDS = [export_cmd]
