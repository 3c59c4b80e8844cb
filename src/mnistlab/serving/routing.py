"""HEAD wherever GET: FastAPI routes answer only the methods they declare."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute


def answer_head(router: APIRouter) -> None:
    """Give every GET route of ``router`` a HEAD twin (once; calling again adds nothing).

    The twins stay out of the OpenAPI schema (a second operation per path would only repeat the
    GET); uvicorn sends their headers, ``Content-Length`` included, without the body.
    Starlette's own routes and mounts (``/openapi.json``, ``/static``) answer HEAD already.
    """
    heads = {r.path for r in router.routes if isinstance(r, APIRoute) and "HEAD" in r.methods}
    for route in list(router.routes):
        if isinstance(route, APIRoute) and "GET" in route.methods and route.path not in heads:
            path = route.path.removeprefix(router.prefix)  # add_api_route adds it again
            router.add_api_route(path, route.endpoint, methods=["HEAD"],
                                 response_model=route.response_model,
                                 response_class=route.response_class,
                                 include_in_schema=False, name=f"{route.name}_head")
