"""The app under a real uvicorn on loopback: concurrency, streamed bodies; the ``serve`` CLI."""

from __future__ import annotations

import http.client
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from mnistlab.cli import cli

from .conftest import photo_of, running


@pytest.fixture(scope="module")
def server(app):
    """The session's app served as ``mnistlab serve`` serves it; yields its base URL."""
    with running(app) as (host, port):
        yield f"http://{host}:{port}"


def test_concurrent_requests_get_the_same_answers_as_sequential_ones(server, app, test_digits):
    images = test_digits[0][:20]
    photos = [photo_of(im) for im in images[:5]]
    with httpx.Client(base_url=server) as c:
        expected_px = [c.post("/api/predict", json={"pixels": im.tolist()}).json()
                       for im in images]
        expected_ph = [c.post("/api/predict", files={"file": ("d.png", p)}).json()
                       for p in photos]

    def worker(k: int):
        out = []
        with httpx.Client(base_url=server) as c:
            for i in range(30):
                j = (k + i) % len(images)
                if i % 6 == 5:
                    r = c.post("/api/predict", files={"file": ("d.png", photos[j % 5])})
                    out.append((r.status_code, r.json(), expected_ph[j % 5]))
                else:
                    r = c.post("/api/predict", json={"pixels": images[j].tolist()})
                    out.append((r.status_code, r.json(), expected_px[j]))
        return out

    with ThreadPoolExecutor(10) as pool:
        results = [r for chunk in pool.map(worker, range(10)) for r in chunk]
    assert len(results) == 300
    for status, got, want in results:
        assert status == 200
        assert got["label"] == want["label"]
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    assert app.state.internal_errors == 0


def test_chunked_body_over_the_limit_is_cut_off_with_413(server):
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/api/predict")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b" " * (256 * 1024)
    try:
        for _ in range(40):  # 10 MB offered; the server answers after ~5 MB
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close the connection once it has answered
    r = conn.getresponse()
    assert r.status == 413
    assert "too large" in json.loads(r.read())["detail"]
    conn.close()


def test_binds_loopback_only_by_default():
    host = next(p for p in cli.commands["serve"].params if p.name == "host")
    assert host.default == "127.0.0.1"


# The CLI: everything that fails before uvicorn starts --------------------------------------------


def test_serve_refuses_an_incomplete_run(run28, tmp_path):
    run = tmp_path / "half"
    shutil.copytree(run28.path, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = "interrupted"
    (run / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(cli, ["serve", str(run)])
    assert res.exit_code == 1
    assert "Error: run" in res.output and "interrupted" in res.output and "--resume" in res.output


def test_serve_refuses_a_missing_run(tmp_path):
    res = CliRunner().invoke(cli, ["serve", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "Error: run directory not found" in res.output


@pytest.mark.parametrize("args", [[], ["somerun", "--model", "m.keras"]])
def test_serve_needs_exactly_one_source(args):
    res = CliRunner().invoke(cli, ["serve", *args])
    assert res.exit_code == 2 and "exactly one" in res.output


def test_serve_refuses_a_bad_model_file(tmp_path):
    bad = tmp_path / "m.keras"
    bad.write_bytes(b"not a zip")
    res = CliRunner().invoke(cli, ["serve", "--model", str(bad)])
    assert res.exit_code == 1 and res.output.startswith("Error:")


def test_a_plain_model_file_can_be_served(run28, test_digits):
    from fastapi.testclient import TestClient

    from mnistlab.serving.app import create_app

    app = create_app(run28.path / "model.keras", model_file=True)
    with TestClient(app) as c:
        info = c.get("/api/model").json()
        assert info["run_name"] is None and info["source"] == "model file model.keras"
        assert info["class_names"] == [str(i) for i in range(10)] and info["params"] == 87_374
        r = c.post("/api/predict", json={"pixels": test_digits[0][0].tolist()})
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_an_8x8_digits_run_is_served_at_its_own_size(digits_run):
    from fastapi.testclient import TestClient
    from sklearn.datasets import load_digits

    from mnistlab.serving.app import create_app

    image = np.round(load_digits().images[0] * (255 / 16)).astype(np.uint8)  # a 0
    from mnistlab.serving.pixels import accepted_shapes

    with TestClient(create_app(digits_run.path)) as c:
        assert c.get("/api/model").json()["image_size"] == 8
        schema = c.get("/openapi.json").json()["components"]["schemas"]["PixelsRequest"]
        assert schema["properties"]["pixels"]["description"] == accepted_shapes(8)
        assert "8×8 rows or 64 flat numbers" in accepted_shapes(8)
        r = c.post("/api/predict", json={"pixels": image.tolist(), "return_image": True})
        assert r.status_code == 200 and np.array(r.json()["image"]).shape == (8, 8)
        bad = c.post("/api/predict", json={"pixels": [0] * 784})
        assert bad.status_code == 422 and "64 numbers" in bad.json()["detail"]
        photo = c.post("/api/predict?return_image=true",
                       files={"file": ("d.png", photo_of(image, scale=20))})
        assert photo.status_code == 200 and np.array(photo.json()["image"]).shape == (8, 8)
