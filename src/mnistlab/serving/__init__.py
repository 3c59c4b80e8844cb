"""Serve a trained model: a draw-a-digit page and a JSON API (``mnistlab serve``).

``create_app(run_dir)`` builds the FastAPI app around one model loaded once; ``serve(app)`` runs
it under uvicorn within ``ServerLimits``. The modules, outside in:

- ``app``: ``create_app`` - state on ``app.state``, routers, middleware, error handlers.
- ``page`` (``/``, ``/static``, health) and ``api`` (``/api/...``): module-level routes.
- ``bodies`` (reading JSON/multipart requests), ``pixels`` (accepted shapes -> arrays),
  ``schemas`` (request and response models), ``openapi``, ``problems`` (error answers).
- ``served``: loading the model and its metadata. ``limits``: ``ServerLimits`` and the body
  cap. ``protocol``: the request-head deadline. ``server``: uvicorn configured from the limits.
The page's files are in ``static/`` and served by the app itself (no CDN).
"""

from mnistlab.serving.app import create_app
from mnistlab.serving.limits import ServerLimits
from mnistlab.serving.server import serve

__all__ = ["ServerLimits", "create_app", "serve"]
