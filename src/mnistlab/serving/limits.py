"""Every limit the server puts on a client, in one place, and the middleware enforcing the body cap.

``ServerLimits`` holds them all: the app reads the request limits (body size, batch size, body
time), ``mnistlab.serving.server`` hands the connection limits to uvicorn and to the
request-head guard (``mnistlab.serving.protocol``). README's Serving section lists the defaults.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mnistlab.serving.schemas import Problem


@dataclass(frozen=True)
class ServerLimits:
    """How much a client may send, how slowly, and how many clients at once.

    Attributes:
        max_body_bytes: largest request body (413 above), counted as it arrives.
        max_batch: most pictures in one ``/api/predict/batch`` request (422 above).
        body_timeout: seconds a request body may take to arrive in full (408 after).
        head_timeout: seconds from a connection's (or a new request's) first byte until its
            request line and headers are complete; a slower client is disconnected.
        max_head_bytes: largest request line plus headers (the connection is closed above).
        keep_alive_timeout: seconds an idle keep-alive connection is kept open.
        max_concurrency: most connections and tasks at once; more get 503 from uvicorn.
        backlog: connections the operating system queues before ``accept``.
        graceful_shutdown_timeout: seconds running requests get to finish on Ctrl+C/SIGTERM.
    """

    max_body_bytes: int = 5 * 1024 * 1024
    max_batch: int = 64
    body_timeout: float = 30.0
    head_timeout: float = 10.0
    max_head_bytes: int = 16 * 1024
    keep_alive_timeout: int = 5
    max_concurrency: int = 200
    backlog: int = 256
    graceful_shutdown_timeout: int = 10


class BodyTooLarge(Exception):
    """The request body went over the limit while it was being received."""


class BodyTooSlow(Exception):
    """The request body did not arrive within ``body_timeout``."""


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` (413) or slower than ``timeout`` (408).

    A declared ``Content-Length`` over the limit is refused before the body is read; otherwise
    the bytes are counted as they arrive (chunked uploads declare no length, and a declared
    length can lie), and the request fails as soon as the count passes the limit. The whole body
    must arrive within ``timeout`` seconds of the app's first read.
    """

    def __init__(self, app, max_bytes: int, timeout: float):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope["headers"])
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, 413, too_large(self.max_bytes, f"{declared:,} bytes declared"))
            return
        counter = _Counter(receive, self.max_bytes, self.timeout)
        try:
            await self.app(scope, counter.receive, send)
        except BodyTooLarge:
            await _refuse(send, 413, too_large(self.max_bytes,
                                               f"more than {self.max_bytes:,} bytes sent"))
        except BodyTooSlow:
            await _refuse(send, 408, too_slow(self.timeout, counter.seen))


class _Counter:
    """Wraps ``receive``: counts body bytes and holds the body to one deadline."""

    def __init__(self, receive, limit: int, timeout: float):
        self._receive = receive
        self.limit = limit
        self.timeout = timeout
        self.seen = 0
        self.deadline: float | None = None
        self.complete = False

    async def receive(self):
        if self.complete:  # later reads only wait for the client to disconnect
            return await self._receive()
        if self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self._receive()
        except TimeoutError:
            raise BodyTooSlow() from None
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise BodyTooLarge()
        self.complete = not message.get("more_body", False)
        return message


def _declared_length(headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send, status: int, detail: str) -> None:
    # The app may have started an answer already (it never does before reading the whole body);
    # then the error cannot be sent and the connection is closed by the server.
    body = Problem(detail=detail).model_dump_json(exclude_none=True).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})


def too_large(limit: int, received: str) -> str:
    """The 413 message: the limit, what was received and how to fit under it."""
    return (f"the request body is too large: the limit is {limit:,} bytes "
            f"({limit / 2**20:g} MB); received {received}. Send a smaller picture (crop or "
            "shrink it, or save it as JPEG) or fewer batch items")


def too_slow(timeout: float, received: int) -> str:
    """The 408 message: the time limit and how much of the body had arrived."""
    return (f"the request body arrived too slowly: it must arrive within {timeout:g} s; "
            f"received {received:,} bytes in that time. Send the whole body at once")
