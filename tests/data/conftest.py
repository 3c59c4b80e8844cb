"""Fixtures for the data tests: a real loopback HTTP server and tiny files written by the tests."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest
from datafiles import Server


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own Keras cache and no mirrors from the environment."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("MNISTLAB_MIRRORS", raising=False)


def _handler(server: Server):
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with lock:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
            route = server.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            if route.status != 200:
                self.send_error(route.status)
                return
            if route.barrier is not None:
                route.barrier.wait(timeout=10)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if route.length:
                self.send_header("Content-Length", str(len(route.body) + route.extra_length))
            self.end_headers()
            half = len(route.body) // 2
            self.wfile.write(route.body[:half])
            self.wfile.flush()
            self.wfile.write(route.body[half:])
            if route.extra_length or not route.length:
                self.close_connection = True

        def log_message(self, *args):  # keep test output clean
            pass

    return Handler


@pytest.fixture
def http_server():
    """Yield a running ``Server``; add ``Route`` entries to ``server.routes`` by path."""
    server = Server(url="")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def dead_url():
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
