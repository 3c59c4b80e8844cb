"""``mnistlab serve``: the draw-a-digit page and the prediction API."""

from __future__ import annotations

import click


@click.command("serve")
@click.argument("run", required=False, type=click.Path())
@click.option("--model", "model_path", type=click.Path(), help="Serve a plain .keras/.h5 file instead.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the server to your network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve_cmd(run, model_path, host, port, access_log):
    """Serve RUN's model: a page to draw digits on at / and a JSON API (docs at /docs)."""
    from mnistlab.serving import create_app, serve

    if bool(run) == bool(model_path):
        raise click.UsageError("give either a RUN directory or --model FILE (exactly one)")
    app = create_app(run or model_path, model_file=model_path is not None)
    click.echo(f"Serving {app.state.info.run_name or model_path} at http://{host}:{port}/ "
               "(Ctrl+C to stop)")
    serve(app, host=host, port=port, access_log=access_log)


COMMANDS = [serve_cmd]
