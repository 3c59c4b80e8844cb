"""Reading prediction requests: JSON or multipart, with 4xx errors that say what was wrong.

The prediction routes read their bodies by hand (one route takes both kinds), so these do what
FastAPI's parameter parsing would: refuse unknown query parameters and content types, parse and
validate JSON against the request models, and collect uploaded files.
"""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException


def body_kind(request: Request) -> str:
    """``"json"`` or ``"form"``, after refusing unknown query parameters and content types.

    Raises:
        HTTPException: 422 for an unknown query parameter, 415 for another content type.
    """
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


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body parsed and validated as ``model``.

    Raises:
        HTTPException: 400 for an empty body or malformed JSON, 422 for content the model
            refuses (with an ``errors`` list per field).
    """
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
        raise invalid(e) from None


async def read_files(request: Request, field: str, limit: int) -> list[tuple[str, bytes]]:
    """The files uploaded in form ``field``: ``(filename, bytes)`` each, at most ``limit``.

    Raises:
        HTTPException: 422 for a missing field or a text value instead of a file; 400 from
            Starlette for a broken form or more than ``limit`` files.
    """
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


def invalid(e: ValidationError) -> HTTPException:
    """A 422 naming the first few problems (and what was received), listing up to 20."""
    errors = [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
              for err in e.errors(include_url=False, include_input=False)]
    shown = "; ".join(f"{_where(err['loc'])}: {err['msg']}{_received(raw)}"
                      for err, raw in zip(errors[:3], e.errors()[:3], strict=True))
    more = f" (and {len(errors) - 3} more problems)" if len(errors) > 3 else ""
    exc = HTTPException(422, f"invalid request: {shown}{more}")
    exc.errors = errors[:20]
    return exc


def _where(loc: list) -> str:
    return ".".join(str(p) for p in loc) or "body"


def _received(err: dict) -> str:
    # Name scalars only: a wrong list or object could be megabytes long.
    value = err.get("input")
    if isinstance(value, bool):
        return f" (received the boolean {str(value).lower()})"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:20] + "..."
        return f" (received the string {shown!r})"
    if value is None and "input" in err and err["type"] != "missing":
        return " (received null)"
    if isinstance(value, int | float):
        return f" (received {value!r})"
    return ""
