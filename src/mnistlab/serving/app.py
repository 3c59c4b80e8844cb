"""The HTTP server: a draw-a-digit page and a JSON API over one trained model.

``create_app(source)`` loads the model once (a run directory, a ``.keras``/``.h5`` file, or a
ready ``Predictor``) and returns a FastAPI app. Inference is the numpy ``Predictor``: it is
thread-safe and needs no lock, so requests never wait for each other. Model-shaped JSON pixels
(the cheap, common case: ~0.1 ms) are predicted on the event loop; anything that decodes or
preprocesses a picture runs in the thread pool so a slow photo cannot stall other clients.

Every bad input gets a 4xx JSON ``{"detail": ...}`` that says what was wrong; the catch-all 500
handler exists for bugs only, and counts what reaches it in ``app.state.internal_errors``.
Request bodies are capped (``max_body_bytes``, 5 MB) by counting the bytes actually received,
not by trusting ``Content-Length``. Nothing here accepts a model upload.
"""

from __future__ import annotations

import io
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from mnistlab import __version__
from mnistlab.errors import ImageError, MnistlabError
from mnistlab.serving.schemas import (
    BatchRequest,
    BatchResponse,
    Health,
    LayerInfo,
    ModelInfo,
    PixelsRequest,
    PredictionResponse,
    Problem,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_BATCH = 64
_STATIC = resources.files("mnistlab.serving") / "static"
_PAGE_HEADERS = {
    # Everything the page needs comes from this server: no CDN, no inline script.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# Loading -----------------------------------------------------------------------------------------


def load_source(source, model_file: bool = False):
    """Load what ``create_app`` serves.

    Args:
        source: a run directory, a ``Predictor``, or (with ``model_file``) a ``.keras``/``.h5``
            file saved by any Keras code.
        model_file: ``source`` is a model file, not a run directory.

    Returns:
        ``(predictor, info)``: the ``Predictor`` and a ``ModelInfo`` without the server limits
        filled in (``max_batch``/``max_body_bytes`` are 0).

    Raises:
        RunError: a missing or incomplete run directory. ModelError: a refused model.
    """
    from mnistlab.inference import Predictor

    if isinstance(source, Predictor):
        return source, _info(source, source="predictor")
    path = Path(os.fspath(source))
    if model_file:
        from mnistlab.modelfile import load_model_file

        model = load_model_file(path)
        predictor = Predictor.from_model(model)
        return predictor, _info(predictor, source=f"model file {path.name}", model=model)

    from mnistlab.runs import load_run

    run = load_run(path)  # refuses a missing or incomplete run before anything is loaded
    predictor = Predictor.from_run(path)
    manifest, metrics = run.manifest, run.metrics
    return predictor, _info(
        predictor,
        source="run directory",
        model=run.load_model(),
        run_name=run.path.name,
        dataset=(manifest.get("dataset") or {}).get("name"),
        preset=manifest.get("preset"),
        epochs=manifest.get("epochs_done"),
        test_accuracy=metrics.get("test_accuracy", manifest.get("test_accuracy")),
        test_loss=metrics.get("test_loss", manifest.get("test_loss")),
    )


def _info(predictor, source: str, model=None, **fields) -> ModelInfo:
    layers = [_layer_info(layer) for layer in model.layers] if model is not None else []
    return ModelInfo(
        run_name=fields.pop("run_name", None),
        source=source,
        dataset=fields.pop("dataset", None),
        class_names=list(predictor.class_names),
        num_classes=predictor.num_classes,
        image_size=predictor.image_size,
        params=int(model.count_params()) if model is not None else None,
        layers=layers,
        preprocess=predictor.preprocess_params.model_dump(),
        max_batch=0,
        max_body_bytes=0,
        **fields,
    )


def _layer_info(layer) -> LayerInfo:
    try:
        shape = [None if d is None else int(d) for d in layer.output.shape]
    except (AttributeError, ValueError):
        shape = []
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    return LayerInfo(name=layer.name, type=type(layer).__name__, output_shape=shape,
                     params=int(layer.count_params()), activation=activation)


# The body limit ----------------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    """The request body went over the limit while it was being received."""


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413.

    A declared ``Content-Length`` over the limit is refused before the body is read; otherwise
    the bytes are counted as they arrive (chunked uploads declare no length, and a declared
    length can lie), and the request fails as soon as the count passes the limit.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._refuse(send, f"{declared:,} bytes declared")
                    return
                break
        seen = 0
        limit = self.max_bytes

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(413, _too_large(limit, f"more than {limit:,} bytes sent"))
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send, received: str) -> None:
        body = Problem(detail=_too_large(self.max_bytes, received)).model_dump_json(
            exclude_none=True).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})


def _too_large(limit: int, received: str) -> str:
    return (f"the request body is too large: the limit is {limit:,} bytes "
            f"({limit / 2**20:g} MB); received {received}. Send a smaller picture (crop or "
            "shrink it, or save it as JPEG) or fewer batch items")


# The app -----------------------------------------------------------------------------------------


ReturnImage = Annotated[bool, Query(
    description="Include the image the model saw (also settable per JSON item)")]
_ERRORS = {
    400: {"model": Problem, "description": "Malformed JSON, an empty body or a broken form"},
    413: {"model": Problem, "description": "Body over the size limit"},
    415: {"model": Problem, "description": "Neither JSON nor multipart/form-data"},
    422: {"model": Problem, "description": "Valid JSON/form with wrong content"},
}


def _body_doc(json_model: str, file_field: str, many: bool) -> dict:
    binary = {"type": "string", "format": "binary"}
    files = {"type": "array", "items": binary} if many else binary
    what = "files (one part per picture)" if many else "an image file"
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{json_model}"}},
        "multipart/form-data": {"schema": {
            "type": "object", "required": [file_field],
            "properties": {file_field: {**files, "description": f"{what}: PNG, JPEG, BMP, "
                                        "GIF, WEBP or TIFF"}},
        }},
    }}}


def create_app(source, *, model_file: bool = False, max_body_bytes: int = MAX_BODY_BYTES,
               max_batch: int = MAX_BATCH, info: ModelInfo | None = None) -> FastAPI:
    """Build the server for one model.

    Args:
        source: a run directory or a ``mnistlab.inference.Predictor``; with ``model_file``, a
            ``.keras``/``.h5`` file.
        model_file: ``source`` is a plain Keras model file (class names ``"0"``...).
        max_body_bytes: largest request body accepted (413 above).
        max_batch: most pictures in one ``/api/predict/batch`` request (422 above).
        info: metadata shown by ``/api/model``; by default read from ``source``.

    Returns:
        A FastAPI app; run it with uvicorn (``mnistlab serve``).

    Raises:
        RunError: a missing or incomplete run. ModelError: the model is refused.
    """
    predictor, loaded = load_source(source, model_file)
    info = (info or loaded).model_copy(update={"max_batch": max_batch,
                                                "max_body_bytes": max_body_bytes})
    size = predictor.image_size

    app = FastAPIOffline(
        title="mnistlab",
        version=__version__,
        description=(
            "Predict handwritten digits with a model trained by mnistlab. The page at / lets "
            "you draw or upload one. Pictures may be sent as image files (multipart/form-data) "
            "or as JSON numbers."
        ),
    )
    app.state.predictor = predictor
    app.state.info = info
    app.state.internal_errors = 0
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")
    page = (_STATIC / "index.html").read_text(encoding="utf-8")

    # Pictures -> predictions ------------------------------------------------------------------

    def answer(prediction, return_image: bool) -> PredictionResponse:
        image = None
        if return_image:
            image = np.round(prediction.image * 255.0).astype(np.uint8).tolist()
        return PredictionResponse(
            label=prediction.label, class_name=prediction.name,
            confidence=round(prediction.confidence, 6),
            probabilities=[round(p, 6) for p in prediction.probabilities.tolist()],
            status=prediction.status, message=prediction.message, image=image,
        )

    def prepare(item: PixelsRequest) -> tuple[np.ndarray, bool | None]:
        """JSON pixels -> float32 array and the predictor's ``preprocess`` argument.

        ``None``: model-shaped numbers, used as they are (MNIST-like already). ``True``: a
        picture to preprocess - any other grid, or a model-shaped one when asked.
        """
        px = item.pixels
        if isinstance(px[0], list):
            widths = {len(row) for row in px}
            if len(widths) > 1:
                raise ImageError(f"pixels rows must all have the same length; received rows of "
                                 f"lengths {sorted(widths)}")
            shaped = len(px) == size and widths == {size}
        elif len(px) != size * size:
            raise ImageError(
                f"a flat pixels list must have {size * size} numbers ({size}x{size}); "
                f"received {len(px)}. Send rows ([[...], ...]) for pictures of other sizes")
        else:
            shaped = True
        return np.array(px, dtype=np.float32), None if shaped and not item.preprocess else True

    def predict_arrays(prepared, return_images) -> list[PredictionResponse]:
        if all(pre is None for _, pre in prepared):
            results = predictor.predict_many([a for a, _ in prepared])  # one forward pass
        else:
            results = [predictor.predict(a, preprocess=pre) for a, pre in prepared]
        return [answer(r, k) for r, k in zip(results, return_images, strict=True)]

    async def predict_json(items: list[PixelsRequest], return_image: bool):
        prepared = [prepare(item) for item in items]
        flags = [item.return_image or return_image for item in items]
        if all(pre is None for _, pre in prepared):
            # ~0.1 ms of numpy: cheaper on the event loop than a hop to the thread pool
            # (bench/serve_load.py: 0.43-0.46 vs 0.53-0.83 ms of server CPU per request).
            return predict_arrays(prepared, flags)
        return await run_in_threadpool(predict_arrays, prepared, flags)

    def predict_files(blobs: list[tuple[str, bytes]], return_image: bool):
        out = []
        for name, data in blobs:
            # A named file object, so that decoding errors name the upload.
            stream = io.BytesIO(data)
            stream.name = name
            out.append(answer(predictor.predict(stream), return_image))
        return out

    async def read_json(request: Request, model):
        body = await request.body()
        if not body.strip():
            raise HTTPException(400, "the request body is empty. Send JSON like "
                                     '{"pixels": [[0, ...], ...]} or an image file')
        try:
            return model.model_validate_json(body)
        except ValidationError as e:
            if any(err["type"] == "json_invalid" for err in e.errors()):
                raise HTTPException(400, f"the body is not valid JSON: "
                                         f"{e.errors()[0]['msg']}") from None
            raise _invalid(e) from None

    async def read_files(request: Request, field: str, limit: int) -> list[tuple[str, bytes]]:
        async with request.form(max_files=limit, max_fields=limit + 8) as form:
            parts = form.getlist(field)
            if not parts:
                raise HTTPException(422, f"no {field!r} field in the form. Send the picture as "
                                         f"multipart/form-data field {field!r}; received fields "
                                         f"{sorted(set(form.keys())) or 'none'}")
            blobs = []
            for part in parts:
                if not isinstance(part, UploadFile):
                    raise HTTPException(422, f"form field {field!r} must be a file upload, not "
                                             "text. Attach the image file itself")
                blobs.append((part.filename or "upload", await part.read()))
            return blobs

    def kind(request: Request) -> str:
        """``"json"`` or ``"form"``, after refusing unknown query parameters and content types."""
        unknown = sorted(set(request.query_params) - {"return_image"})
        if unknown:
            raise HTTPException(422, f"unknown query parameter(s) {unknown}; the only one is "
                                     "return_image=true|false")
        ctype = request.headers.get("content-type", "")
        mime = ctype.split(";", 1)[0].strip().lower()
        if mime == "application/json" or mime.endswith("+json"):
            return "json"
        if mime == "multipart/form-data":
            return "form"
        raise HTTPException(
            415, "send application/json (pixels) or multipart/form-data (an image file); "
                 f"received content-type {ctype or 'none'!r}")

    # Routes -----------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
    async def healthz():
        """The process is up."""
        return Health(status="alive")

    @app.get("/readyz", response_model=Health, tags=["health"], summary="Readiness",
             responses={503: {"model": Health, "description": "model not loaded"}})
    async def readyz():
        """The model is loaded and predictions can be served."""
        if getattr(app.state, "predictor", None) is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return Health(status="ready")

    @app.get("/api/model", response_model=ModelInfo, tags=["model"],
             summary="The served model")
    async def model_info():
        """The served model: run, dataset, test metrics, class names, layers."""
        return app.state.info

    @app.post("/api/predict", response_model=PredictionResponse, tags=["predict"],
              summary="Predict one picture", responses=_ERRORS,
              openapi_extra=_body_doc("PixelsRequest", "file", many=False))
    async def predict(request: Request, return_image: ReturnImage = False):
        """Predict one picture: an image file (form field ``file``) or JSON ``pixels``."""
        if kind(request) == "json":
            item = await read_json(request, PixelsRequest)
            return _json((await predict_json([item], return_image))[0])
        blobs = await read_files(request, "file", limit=1)
        return _json((await run_in_threadpool(predict_files, blobs, return_image))[0])

    @app.post("/api/predict/batch", response_model=BatchResponse, tags=["predict"],
              summary="Predict several pictures", responses=_ERRORS,
              openapi_extra=_body_doc("BatchRequest", "files", many=True))
    async def predict_batch(request: Request, return_image: ReturnImage = False):
        """Predict several pictures: image files (form field ``files``) or JSON ``items``.

        At most ``max_batch`` pictures (see /api/model); answers come in the same order.
        """
        if kind(request) == "json":
            batch = await read_json(request, BatchRequest)
            if len(batch.items) > max_batch:
                raise HTTPException(422, _too_many(len(batch.items), max_batch))
            return _json(BatchResponse(predictions=await predict_json(batch.items, return_image)))
        blobs = await read_files(request, "files", limit=max_batch)
        return _json(BatchResponse(
            predictions=await run_in_threadpool(predict_files, blobs, return_image)))

    _document_bodies(app)
    return app


def _json(model) -> Response:
    # The models were validated when built; FastAPI's second validation pass would cost ~10 %
    # of a prediction's time. response_model= on the route still documents them.
    return Response(model.model_dump_json(), media_type="application/json")


def _too_many(n: int, limit: int) -> str:
    return f"too many pictures: at most {limit} per batch; received {n}. Split the batch"


def _invalid(e: ValidationError) -> HTTPException:
    errors = [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
              for err in e.errors(include_url=False, include_input=False)]
    shown = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                      for e in errors[:3])
    more = f" (and {len(errors) - 3} more problems)" if len(errors) > 3 else ""
    exc = HTTPException(422, f"invalid request: {shown}{more}")
    exc.errors = errors[:20]
    return exc


def _add_error_handlers(app: FastAPI) -> None:
    def problem(status: int, detail: str, errors=None, headers=None) -> JSONResponse:
        body = {"detail": detail} if errors is None else {"detail": detail, "errors": errors}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            detail = f"no such endpoint: {where}. The API is described at /docs"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "?")
            detail = f"method not allowed: {where}; this path accepts {allowed}. See /docs"
        return problem(exc.status_code, detail, getattr(exc, "errors", None), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type")}
                  for e in exc.errors()]
        return problem(422, f"invalid request: {errors[0]['msg'] if errors else exc}", errors)

    @app.exception_handler(ImageError)
    async def image_error(request, exc: ImageError):
        return problem(422, str(exc))

    @app.exception_handler(MnistlabError)
    async def mnistlab_error(request, exc: MnistlabError):
        return problem(422, str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):
        # A bug, never a user's mistake: log it with the traceback, tell the client plainly.
        app.state.internal_errors += 1
        log.exception("internal error on %s %s", request.method, request.url.path)
        return problem(500, "internal server error: this is a bug in mnistlab, not a problem "
                            "with your request. Please report it with the server log")


def _document_bodies(app: FastAPI) -> None:
    """Put the JSON request models into /openapi.json (the routes read their bodies by hand)."""
    from fastapi.openapi.utils import get_openapi

    def openapi():
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (PixelsRequest, BatchRequest):
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(js.pop("$defs", {}))
                components[model.__name__] = js
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
