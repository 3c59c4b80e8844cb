"""The HTTP server app: a draw-a-digit page and a JSON API over one trained model.

``create_app(source)`` loads the model once (``served.load_served``), keeps it on ``app.state``
and includes the module-level routes (``page``, ``api``). Request bodies are capped by
``limits.BodyLimit``; every limit is in ``limits.ServerLimits``. Nothing here accepts a model
upload. Run it with ``mnistlab.serving.server.serve``, which adds the connection limits.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from mnistlab import __version__
from mnistlab.serving import api, page
from mnistlab.serving.limits import BodyLimit, ServerLimits
from mnistlab.serving.openapi import document
from mnistlab.serving.problems import add_error_handlers
from mnistlab.serving.routing import answer_head
from mnistlab.serving.schemas import ModelInfo
from mnistlab.serving.served import load_served

DESCRIPTION = (
    "Predict handwritten digits with a model trained by mnistlab. The page at / lets you draw "
    "or upload one. Pictures may be sent as image files (multipart/form-data) or as JSON "
    "numbers."
)


def create_app(source, *, model_file: bool = False, limits: ServerLimits | None = None,
               info: ModelInfo | None = None) -> FastAPI:
    """Build the server for one model.

    Args:
        source: a run directory or a ``mnistlab.inference.Predictor``; with ``model_file``, a
            ``.keras``/``.h5`` file.
        model_file: ``source`` is a plain Keras model file (class names ``"0"``...).
        limits: body size, batch size and body time limits; ``ServerLimits()`` by default.
        info: metadata shown by ``/api/model``; by default read from ``source``.

    Returns:
        A FastAPI app with ``state.predictor``, ``state.info``, ``state.limits`` and
        ``state.internal_errors`` (requests that reached the catch-all 500 handler).

    Raises:
        RunError: a missing or incomplete run. ModelError: the model is refused.
    """
    limits = limits or ServerLimits()
    served = load_served(source, model_file)
    app = FastAPIOffline(title="mnistlab", version=__version__, description=DESCRIPTION)
    app.state.predictor = served.predictor
    app.state.info = (info or served.info).model_copy(update={
        "max_batch": limits.max_batch, "max_body_bytes": limits.max_body_bytes})
    app.state.limits = limits
    app.state.page = page.read_page()
    app.state.internal_errors = 0
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout)
    add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=str(page.STATIC)), name="static")
    app.include_router(page.router)
    app.include_router(api.router)
    answer_head(app.router)  # the docs pages; page and api routers did their own
    document(app, served.predictor.image_size)
    return app

