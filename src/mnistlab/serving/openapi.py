"""The OpenAPI schema: request bodies the routes read by hand, the accepted pixel shapes.

The prediction routes take JSON or multipart in one route, so FastAPI cannot infer their
bodies; ``body_doc`` describes both, and ``document(app, image_size)`` adds the JSON models to
``/openapi.json`` with the served model's own shapes (``pixels.accepted_shapes``) as the
``pixels`` description - the same sentence README shows for 28x28 models.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from mnistlab.serving.pixels import accepted_shapes
from mnistlab.serving.schemas import BatchRequest, PixelsRequest, Problem

ERRORS = {
    400: {"model": Problem, "description": "Malformed JSON, an empty body or a broken form"},
    408: {"model": Problem, "description": "Body slower than the time limit"},
    413: {"model": Problem, "description": "Body over the size limit"},
    415: {"model": Problem, "description": "Neither JSON nor multipart/form-data"},
    422: {"model": Problem, "description": "Valid JSON/form with wrong content"},
}


def body_doc(json_model: str, file_field: str, many: bool) -> dict:
    """``openapi_extra`` for a route taking ``json_model`` as JSON or files in ``file_field``."""
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


def document(app: FastAPI, image_size: int) -> None:
    """Make ``app.openapi()`` include the JSON request models, described for ``image_size``."""

    def openapi():
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app, image_size)
        return app.openapi_schema

    app.openapi = openapi


def build_schema(app: FastAPI, image_size: int) -> dict:
    """The OpenAPI schema of ``app``, with ``PixelsRequest`` and ``BatchRequest`` in it."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (PixelsRequest, BatchRequest):
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(js.pop("$defs", {}))
        components[model.__name__] = js
    components["PixelsRequest"]["properties"]["pixels"]["description"] = (
        accepted_shapes(image_size))
    return schema
