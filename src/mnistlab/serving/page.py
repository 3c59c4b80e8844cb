"""The draw-a-digit page (``/`` and ``/static``) and the health checks."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from mnistlab.serving.routing import answer_head
from mnistlab.serving.schemas import Health

STATIC = resources.files("mnistlab.serving") / "static"
PAGE_HEADERS = {
    # Everything the page needs comes from this server: no CDN, no inline script.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.page, headers=PAGE_HEADERS)


def read_page() -> str:
    """The page's HTML (``static/index.html``), read once by ``create_app``."""
    return (STATIC / "index.html").read_text(encoding="utf-8")


@router.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
async def healthz():
    """The process is up."""
    return Health(status="alive")


@router.get("/readyz", response_model=Health, tags=["health"], summary="Readiness",
            responses={503: {"model": Health, "description": "model not loaded"}})
async def readyz(request: Request):
    """The model is loaded and predictions can be served."""
    if getattr(request.app.state, "predictor", None) is None:
        return JSONResponse({"status": "loading"}, status_code=503)
    return Health(status="ready")


answer_head(router)
