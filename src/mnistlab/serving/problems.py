"""Error answers: every failure is JSON ``{"detail": ...}`` saying what was wrong.

Every bad input gets a 4xx; the catch-all 500 handler exists for bugs only, and counts what
reaches it in ``app.state.internal_errors`` (the tests assert it stays 0).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mnistlab.errors import MnistlabError

log = logging.getLogger(__name__)


def add_error_handlers(app: FastAPI) -> None:
    """Answer HTTP errors, validation errors, mnistlab errors and bugs with JSON."""
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(MnistlabError, mnistlab_error)  # ImageError and the rest
    app.add_exception_handler(Exception, internal_error)


def problem(status: int, detail: str, errors=None, headers=None) -> JSONResponse:
    """A ``Problem`` body with ``status``."""
    body = {"detail": detail} if errors is None else {"detail": detail, "errors": errors}
    return JSONResponse(body, status_code=status, headers=headers)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        detail = f"no such endpoint: {where}. The API is described at /docs"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "?")
        detail = f"method not allowed: {where}; this path accepts {allowed}. See /docs"
    return problem(exc.status_code, detail, getattr(exc, "errors", None), exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type")}
              for e in exc.errors()]
    return problem(422, f"invalid request: {errors[0]['msg'] if errors else exc}", errors)


async def mnistlab_error(request: Request, exc: MnistlabError) -> JSONResponse:
    return problem(422, str(exc))


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug, never a user's mistake: log it with the traceback, tell the client plainly.
    request.app.state.internal_errors += 1
    log.exception("internal error on %s %s", request.method, request.url.path)
    return problem(500, "internal server error: this is a bug in mnistlab, not a problem "
                        "with your request. Please report it with the server log")
