"""Connection limits under a real uvicorn on loopback, with raw-socket clients that misbehave.

The server is configured exactly as ``mnistlab serve`` configures it (``server_config``), with
short limits so each slow client is dropped within a second or two. Every slow client is a
bounded loop: it stops by itself (and the test fails) if the server never drops it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import re
import select
import socket
from pathlib import Path

import pytest

from mnistlab.serving.limits import ServerLimits

from .conftest import running

SHORT = ServerLimits(head_timeout=0.5, body_timeout=0.5, max_head_bytes=4096)
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def short(app):
    """The session's model behind short limits; yields ``(host, port)``."""
    from mnistlab.serving.app import create_app

    with running(create_app(app.state.predictor, limits=SHORT)) as address:
        yield address


def drip(address, first: bytes, slowly: bytes = b"", pause: float = 0.1,
         steps: int = 200) -> bytes:
    """Send ``first``, then ``slowly`` one byte per ``pause`` seconds until the server answers.

    Returns:
        Everything the server sent before closing the connection.
    """
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(first)
        for i in range(steps):
            readable, _, _ = select.select([s], [], [], pause)
            if readable:
                break
            if slowly:
                try:
                    s.sendall(slowly[i % len(slowly):][:1])
                except (BrokenPipeError, ConnectionResetError):
                    break
        else:
            pytest.fail(f"the server kept a client that was still sending after {steps} steps")
        return read_to_close(s)


def read_to_close(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def status_and_detail(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"connection: close" in head.lower(), head
    return status, json.loads(body)["detail"]


# The request head ------------------------------------------------------------------------------


def test_a_client_sending_headers_slowly_is_dropped(short):
    raw = drip(short, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", slowly=b"X-Slow: " + b"a" * 1000)
    status, detail = status_and_detail(raw)
    assert status == 408 and "too slowly" in detail and "0.5 s" in detail


def test_a_connection_that_sends_nothing_is_dropped(short):
    status, detail = status_and_detail(drip(short, b""))
    assert status == 408 and "received 0 bytes" in detail


def test_a_slow_second_request_on_a_kept_alive_connection_is_dropped(short):
    with socket.create_connection(short, timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b'"alive"' not in first:
            chunk = s.recv(65536)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /healthz HTTP/1.1\r\n")  # then nothing: the guard, not keep-alive, acts
        readable, _, _ = select.select([s], [], [], 20)
        assert readable, "the server kept a half-sent second request"
        status, detail = status_and_detail(read_to_close(s))
    assert status == 408 and "too slowly" in detail


def test_headers_sent_in_pieces_in_time_are_answered(short):
    conn = http.client.HTTPConnection(*short, timeout=10)
    conn.putrequest("GET", "/healthz")
    for i in range(20):
        conn.putheader(f"X-Piece-{i}", "x" * 50)
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read()) == {"status": "alive"}
    conn.close()


def test_oversized_headers_are_refused_with_431(short):
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    with socket.create_connection(short, timeout=10) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(request)  # the server may close before taking it all
        status, detail = status_and_detail(read_to_close(s))
    assert status == 431 and "4,096 bytes" in detail


# The request body ------------------------------------------------------------------------------


def test_a_slow_body_is_refused_with_408(short):
    head = (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4000\r\n\r\n")
    status, detail = status_and_detail(drip(short, head + b'{"pixels": [', slowly=b"0, " * 2000))
    assert status == 408 and "body arrived too slowly" in detail and "0.5 s" in detail


def test_a_body_in_time_is_answered(short):
    conn = http.client.HTTPConnection(*short, timeout=10)
    conn.request("POST", "/api/predict", body=json.dumps({"pixels": [0] * 784}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["status"] == "blank"
    conn.close()


# HEAD ------------------------------------------------------------------------------------------


def get_paths(app, client) -> list[str]:
    """Every GET path: the documented ones, the app's own (docs pages), the page, a static file."""
    documented = [p for p, ops in client.get("/openapi.json").json()["paths"].items()
                  if "get" in ops]
    own = [r.path for r in app.routes if "GET" in (getattr(r, "methods", None) or ())]
    return sorted(set(documented + own)) + ["/", "/static/app.js"]


def test_every_get_route_answers_head(app, client):
    paths = get_paths(app, client)
    assert {"/healthz", "/readyz", "/api/model", "/docs", "/redoc", "/openapi.json"} <= set(paths)
    with running(app) as (host, port), contextlib.closing(
            http.client.HTTPConnection(host, port, timeout=30)) as conn:
        for path in paths:
            conn.request("GET", path)
            got = conn.getresponse()
            body = got.read()
            conn.request("HEAD", path)
            head = conn.getresponse()
            assert head.status == got.status == 200, (path, head.status, got.status)
            assert head.read() == b"", path
            assert head.getheader("content-type") == got.getheader("content-type"), path
            assert int(head.getheader("content-length")) == len(body), path


def test_head_is_refused_where_get_is(client):
    r = client.head("/api/predict")
    assert r.status_code == 405 and "POST" in r.headers["allow"]


def test_head_routes_stay_out_of_the_schema(client):
    spec = client.get("/openapi.json").json()
    assert not [p for p, ops in spec["paths"].items() if "head" in ops]


# The limits are documented -----------------------------------------------------------------------


def serving_section() -> str:
    text = README.read_text(encoding="utf-8")
    return re.search(r"^## Serving.*?(?=^## )", text, re.S | re.M).group(0)


@pytest.mark.parametrize("field", dataclasses.fields(ServerLimits), ids=lambda f: f.name)
def test_readme_lists_every_limit_with_its_default(field):
    rows = [line for line in serving_section().splitlines() if f"`{field.name}`" in line]
    assert len(rows) == 1, f"README's Serving section has no row for {field.name}"
    default = field.default
    shown = f"{default:,}" if isinstance(default, int) else f"{default:g}"
    assert shown in rows[0], (shown, rows[0])


def test_serve_uses_the_apps_limits(app):
    from mnistlab.serving.server import server_config

    config = server_config(app, port=0)
    limits = app.state.limits
    config.load()
    assert config.timeout_keep_alive == limits.keep_alive_timeout
    assert config.limit_concurrency == limits.max_concurrency
    assert config.backlog == limits.backlog
    assert config.http_protocol_class.head_timeout == limits.head_timeout
    assert config.http_protocol_class.max_head_bytes == limits.max_head_bytes
