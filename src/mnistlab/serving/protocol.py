"""A deadline and a size cap on each request's line and headers (uvicorn has neither).

uvicorn's ``timeout_keep_alive`` closes idle connections between requests, but nothing bounds
the time a client may take to send a request's headers: one that opens a connection and sends
a byte every few seconds holds it (and its memory) forever, and httptools buffers headers of any
size. ``HeadGuardProtocol`` is uvicorn's httptools protocol plus both bounds: from the moment a
connection opens, or a new request's first byte arrives on a kept-alive one, the request line
and headers must be complete within ``head_timeout`` seconds and ``max_head_bytes`` bytes, or the
client gets 408 / 431 and the connection is closed. Only the parser's callbacks and asyncio's
protocol methods are overridden.
"""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mnistlab.serving.limits import ServerLimits

log = logging.getLogger(__name__)
LINGER_S = 2.0  # after refusing a request head: how long to drain before closing


class HeadGuardProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a time and size limit on each request head.

    Use ``guarded_protocol(limits)`` to get a subclass with the limits set.
    """

    head_timeout: float = ServerLimits.head_timeout
    max_head_bytes: int = ServerLimits.max_head_bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_bytes = 0  # received since the head began, counted per chunk
        self.parsed_bytes = 0  # request line and headers parsed so far
        self.in_head = True  # waiting for a request line and headers
        self.refused = False  # answered 408/431: ignore whatever else arrives
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if getattr(self, "linger", None) is not None:
            self.linger.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        super().data_received(data)
        if self.in_head and not self.refused and not self.transport.is_closing():
            # Still inside a head after this chunk: count all of it, so memory stays bounded
            # (the limit plus one chunk) however the parser buffers a header being received.
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head_bytes:
                self._too_large(self.head_bytes)

    # httptools parser callbacks

    def on_message_begin(self) -> None:
        if self.refused:
            return
        super().on_message_begin()
        self.in_head = True
        self.parsed_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        if self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._count(len(name) + len(value) + 4):  # ": " and CRLF
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.refused:
            return
        self.in_head = False
        self.head_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            super().on_message_complete()

    # The guard

    def _count(self, n: int) -> bool:
        """Add ``n`` parsed head bytes; False once the request is refused."""
        if self.refused:
            return False
        self.parsed_bytes += n
        if self.parsed_bytes > self.max_head_bytes:
            self._too_large(self.parsed_bytes)
            return False
        return True

    def _arm(self) -> None:
        if self.head_timer is None:  # a request's deadline counts from its connection or byte 1
            self.head_timer = self.loop.call_later(self.head_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _too_slow(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or not self.in_head:
            return
        self._refuse(408, "Request Timeout",
                     f"the request line and headers arrived too slowly: they must arrive within "
                     f"{self.head_timeout:g} s; received {self.head_bytes:,} bytes in that time")

    def _too_large(self, received: int) -> None:
        self._refuse(431, "Request Header Fields Too Large",
                     f"the request line and headers are too large: the limit is "
                     f"{self.max_head_bytes:,} bytes; received {received:,} or more")

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        log.info("closing %s: %s", self.client, detail)
        self._disarm()
        self.in_head = False
        self.refused = True
        body = json.dumps({"detail": detail}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Lingering close: send FIN, keep reading (and dropping) what the client still sends
        # for a moment, then close. Closing with unread input would send a reset, and the
        # client could lose the answer before reading it.
        self.transport.write_eof()
        self.linger = asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)


def guarded_protocol(limits: ServerLimits) -> type[HeadGuardProtocol]:
    """``HeadGuardProtocol`` with ``limits.head_timeout`` and ``limits.max_head_bytes``."""
    return type("HeadGuardProtocol", (HeadGuardProtocol,), {
        "head_timeout": limits.head_timeout, "max_head_bytes": limits.max_head_bytes})
