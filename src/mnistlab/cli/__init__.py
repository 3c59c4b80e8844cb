"""The ``mnistlab`` command line: thin commands over the library.

Importing this package must stay cheap (no keras, jax, tensorflow, numpy-heavy work): each command
imports what it needs inside its body, so ``mnistlab --help`` is instant.
"""

from __future__ import annotations

import sys

import click

from mnistlab import __version__


def _stopping() -> None:
    """We are exiting after an interrupt: a further Ctrl-C must not break the clean-up at exit."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


class _Group(click.Group):
    """A group that turns mnistlab's own errors into ``Error: ...`` and exit code 1."""

    def invoke(self, ctx):
        from mnistlab.errors import MnistlabError, TrainingInterrupted

        try:
            return super().invoke(ctx)
        except TrainingInterrupted as e:
            _stopping()
            click.echo(f"Interrupted: {e}", err=True)
            ctx.exit(130)
        except MnistlabError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            _stopping()
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnistlab")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx, debug):
    """mnistlab: the classic Keras MNIST tutorial as a tool.

    Train the tutorial's MLP with one command, get a run directory with every artifact and an HTML
    report, compare runs, predict on your own digit photos, serve a draw-a-digit page, export.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register():
    from mnistlab.cli import data, export, predict, report, runs, serve, train, tune

    for module in (data, train, runs, predict, report, export, serve, tune):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main():
    """Console-script entry point."""
    import atexit

    exiting = {"code": None}
    # Registered before a command imports what registers handlers of its own (JAX, logging):
    # atexit runs handlers last-in first-out, so this one runs after all of them.
    atexit.register(_skip_teardown, exiting)
    try:
        cli(prog_name="mnistlab")
    except SystemExit as e:
        exiting["code"] = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        raise


def _skip_teardown(exiting: dict) -> None:
    """End the process once every other ``atexit`` handler ran, skipping interpreter teardown.

    Everything a command writes is on disk (atomic writes) before it returns; what is left at
    exit once JAX is loaded is Python finalising JAX, XLA, SciPy and scikit-learn module by
    module: 0.45 s of every command on a 2-core machine. Python has already waited for
    non-daemon threads and run the other ``atexit`` handlers when this runs; the streams are
    flushed here. Without JAX (``--help``, ``runs``) or after an unexpected exception, Python
    exits the ordinary way.
    """
    import contextlib
    import os

    if exiting["code"] is None or "jax" not in sys.modules:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, broken pipe: nothing to say
            stream.flush()
    os._exit(exiting["code"])


if __name__ == "__main__":
    sys.exit(main())
