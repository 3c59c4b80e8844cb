"""Run the app under uvicorn with every connection limit set on purpose (``ServerLimits``)."""

from __future__ import annotations

from fastapi import FastAPI

from mnistlab.serving.limits import ServerLimits


def server_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000,
                  limits: ServerLimits | None = None, access_log: bool = False):
    """The ``uvicorn.Config`` serving ``app`` within ``limits``.

    Args:
        app: from ``create_app``.
        host: address to listen on; ``0.0.0.0`` exposes the server to the network.
        port: TCP port; 0 picks a free one.
        limits: defaults to ``app.state.limits``, the ones the app enforces itself.
        access_log: log every request.

    Returns:
        A ``uvicorn.Config``: httptools with the request-head guard, no WebSockets.
    """
    import uvicorn

    from mnistlab.serving.protocol import guarded_protocol

    limits = limits or app.state.limits
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=access_log,
        http=guarded_protocol(limits), ws="none",
        timeout_keep_alive=limits.keep_alive_timeout,
        limit_concurrency=limits.max_concurrency, backlog=limits.backlog,
        timeout_graceful_shutdown=limits.graceful_shutdown_timeout,
        h11_max_incomplete_event_size=limits.max_head_bytes,  # if h11 is ever chosen instead
    )


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000,
          access_log: bool = False) -> None:
    """Serve ``app`` until Ctrl+C or SIGTERM, within ``app.state.limits``."""
    import uvicorn

    uvicorn.Server(server_config(app, host, port, access_log=access_log)).run()
