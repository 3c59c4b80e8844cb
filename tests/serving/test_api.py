"""The HTTP API in process: every endpoint, and every kind of bad input gets a 4xx that says why."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from .conftest import photo_of, png_bytes

JSON = {"content-type": "application/json"}


def problem(r, status: int, *words: str) -> str:
    """Check a 4xx answer: the status, a JSON ``detail`` naming the problem, and no 500 path."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 15, detail
    for w in words:
        assert w.lower() in detail.lower(), (w, detail)
    return detail


@pytest.fixture(autouse=True)
def no_internal_errors(app):
    """No test input may reach the catch-all 500 handler."""
    before = app.state.internal_errors
    yield
    assert app.state.internal_errors == before, "a request reached the catch-all 500 handler"


# Health, metadata, page ---------------------------------------------------------------------------


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_not_ready_without_a_model(app):
    from fastapi.testclient import TestClient

    from mnistlab.serving.app import create_app

    other = create_app(app.state.predictor)
    other.state.predictor = None
    with TestClient(other) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json() == {"status": "loading"}


def test_model_info_describes_the_run(client, run28):
    info = client.get("/api/model").json()
    assert info["run_name"] == run28.path.name
    assert info["dataset"] == "mnist_sample"
    assert info["test_accuracy"] == pytest.approx(run28.metrics["test_accuracy"])
    assert info["class_names"] == [str(i) for i in range(10)]
    assert info["image_size"] == 28 and info["num_classes"] == 10
    assert [layer["name"] for layer in info["layers"]] == [
        "flatten", "dense1", "dense2", "dense3", "output"]
    assert info["params"] == 87_374 == sum(layer["params"] for layer in info["layers"])
    assert info["layers"][-1]["activation"] == "softmax"
    assert info["layers"][1]["output_shape"] == [None, 100]
    assert info["max_batch"] == 64 and info["max_body_bytes"] == 5 * 1024 * 1024
    assert info["preprocess"]["size"] == 28


def test_page_is_served_with_its_assets_and_no_cdn(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    for needle in ('<canvas id="pad"', 'aria-label="Drawing pad', '<button id="undo"',
                   '<button id="clear"', '<button id="upload-button"', 'type="file"',
                   'name="viewport"'):
        assert needle in html, needle
    assert "http://" not in html and "https://" not in html
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        a = client.get(asset)
        assert a.status_code == 200 and kind in a.headers["content-type"], asset
        assert "http://" not in a.text and "https://" not in a.text and "@import" not in a.text


def test_docs_are_served_offline(client):
    html = client.get("/docs").text
    assert "cdn." not in html and "https://" not in html
    js = [part.split('"')[0] for part in html.split('src="')[1:]]
    assert js and all(client.get(src).status_code == 200 for src in js)


def test_openapi_documents_both_body_kinds_and_no_model_upload(client):
    spec = client.get("/openapi.json").json()
    posts = sorted(p for p, ops in spec["paths"].items() if "post" in ops)
    assert posts == ["/api/predict", "/api/predict/batch"]
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["$ref"].endswith("/PixelsRequest")
    assert body["multipart/form-data"]["schema"]["required"] == ["file"]
    for name in ("PixelsRequest", "BatchRequest", "PredictionResponse", "ModelInfo", "Problem"):
        assert name in spec["components"]["schemas"], name
    responses = spec["paths"]["/api/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422"} <= set(responses)


# Predictions from JSON pixels -----------------------------------------------------------------


def test_pixels_predict_like_the_predictor(client, app, test_digits):
    images, _ = test_digits
    expected = app.state.predictor.predict(images[0])
    r = client.post("/api/predict", json={"pixels": images[0].tolist(), "return_image": True})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["message"] == ""
    assert body["label"] == expected.label and body["class_name"] == expected.name
    assert body["probabilities"] == pytest.approx(expected.probabilities.tolist(), abs=1e-6)
    assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert body["confidence"] == max(body["probabilities"])
    # A model-shaped array is used as it is: the image the model saw is the input.
    assert np.array_equal(np.array(body["image"]), images[0])


def test_flat_nested_and_unit_scaled_pixels_agree(client, test_digits):
    image = test_digits[0][3]
    answers = [
        client.post("/api/predict", json={"pixels": image.tolist()}).json(),
        client.post("/api/predict", json={"pixels": image.ravel().tolist()}).json(),
        client.post("/api/predict", json={"pixels": (image / 255.0).tolist()}).json(),
    ]
    assert answers[0]["image"] is None
    for a in answers[1:]:
        assert a["label"] == answers[0]["label"]
        assert a["probabilities"] == pytest.approx(answers[0]["probabilities"], abs=1e-5)


def test_batch_of_the_test_set_reproduces_the_runs_accuracy(client, run28, test_digits):
    images, labels = test_digits
    predicted = []
    for start in range(0, len(images), 64):
        items = [{"pixels": im.tolist()} for im in images[start : start + 64]]
        r = client.post("/api/predict/batch", json={"items": items})
        assert r.status_code == 200
        predicted += [p["label"] for p in r.json()["predictions"]]
    accuracy = float(np.mean(np.array(predicted) == labels))
    assert accuracy == pytest.approx(run28.metrics["test_accuracy"], abs=1.5 / len(labels))


def test_blank_pixels_have_no_label(client):
    body = client.post("/api/predict", json={"pixels": [[0] * 28] * 28}).json()
    assert body["status"] == "blank" and body["label"] is None and body["class_name"] is None
    assert body["confidence"] == 0 and body["message"]


def test_a_drawing_on_white_is_preprocessed_on_request(client, test_digits):
    image = test_digits[0][5]
    drawing = (255 - image).tolist()  # dark ink on white paper, 28x28
    plain = client.post("/api/predict", json={"pixels": drawing, "return_image": True}).json()
    fixed = client.post("/api/predict", json={"pixels": drawing, "preprocess": True,
                                              "return_image": True}).json()
    assert fixed["status"] == "ok"
    # Preprocessing inverts it back to white on black: the border becomes black.
    assert np.array(plain["image"])[0].mean() > 200 and np.array(fixed["image"])[0].max() == 0


def test_a_larger_grid_is_a_picture_and_is_preprocessed(client):
    grid = np.full((90, 60), 255, np.uint8)
    grid[15:75, 27:34] = 0  # a dark vertical bar on white: a "1"
    body = client.post("/api/predict", json={"pixels": grid.tolist(), "return_image": True}).json()
    assert body["status"] == "ok"
    seen = np.array(body["image"])
    assert seen.shape == (28, 28) and seen[0].max() == 0 and seen.max() > 200


# Predictions from image files -----------------------------------------------------------------


def test_photos_of_digits_read_like_the_digits(client, test_digits):
    images, _ = test_digits
    agree = 0
    for im in images[:10]:
        direct = client.post("/api/predict", json={"pixels": im.tolist()}).json()
        r = client.post("/api/predict?return_image=true",
                        files={"file": ("digit.png", photo_of(im), "image/png")})
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok" and np.array(body["image"]).shape == (28, 28)
        agree += body["label"] == direct["label"]
    assert agree >= 7, f"only {agree} of 10 photos read like the digit itself"


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "BMP", "WEBP", "TIFF"])
def test_other_formats_are_read(client, test_digits, fmt):
    data = png_bytes(255 - np.kron(test_digits[0][1], np.ones((8, 8), np.uint8)), fmt=fmt)
    r = client.post("/api/predict", files={"file": (f"d.{fmt.lower()}", data)})
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_rgba_drawing_on_transparent_canvas(client, test_digits):
    ink = np.kron(test_digits[0][2], np.ones((10, 10), np.uint8))
    rgba = np.zeros((*ink.shape, 4), np.uint8)
    rgba[..., 3] = ink  # black strokes, alpha = ink, transparent elsewhere
    r = client.post("/api/predict", files={"file": ("pad.png", png_bytes(rgba))})
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_a_blank_photo_is_blank(client):
    r = client.post("/api/predict", files={"file": ("white.png", png_bytes(np.full((50, 50), 255,
                                                                                   np.uint8)))})
    assert r.status_code == 200 and r.json()["status"] == "blank"


def test_batch_of_files(client, test_digits):
    files = [("files", (f"{i}.png", photo_of(im), "image/png"))
             for i, im in enumerate(test_digits[0][:5])]
    r = client.post("/api/predict/batch", files=files)
    assert r.status_code == 200
    assert [p["status"] for p in r.json()["predictions"]] == ["ok"] * 5


# Bad input: content type, body, JSON ----------------------------------------------------------


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "image/png",
                                   "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(client, ctype):
    r = client.post("/api/predict", content=b"pixels=1", headers={"content-type": ctype})
    problem(r, 415, "content-type", ctype)


def test_missing_content_type_is_415(client):
    problem(client.post("/api/predict", content=b"{}"), 415, "none")


@pytest.mark.parametrize("body", [b"", b"   \n", b"{", b'{"pixels": [1, 2', b"nope", b"\xff\xfe"])
def test_malformed_or_empty_json_is_400(client, body):
    problem(client.post("/api/predict", content=body, headers=JSON), 400)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_refused(client, token):
    pixels = ["0"] * 784
    pixels[100] = token
    r = client.post("/api/predict", content=f'{{"pixels": [{",".join(pixels)}]}}'.encode(),
                    headers=JSON)
    problem(r, 422, "finite")


@pytest.mark.parametrize("payload, words", [
    ({"pixels": [0] * 783}, ["784", "783"]),
    ({"pixels": [[0] * 28] * 27 + [[0] * 27]}, ["same length"]),
    ({"pixels": [[[0] * 28] * 28]}, ["pixels"]),
    ({"pixels": []}, ["at least 1"]),
    ({"pixels": "0" * 784}, ["pixels"]),
    ({"pixels": None}, ["pixels"]),
    ({"pixels": [[0] * 28] * 27 + [["a"] * 28]}, ["number"]),
    ({"pixels": [-1] + [0] * 783}, ["greater than or equal to 0"]),
    ({"pixels": [256] + [0] * 783}, ["less than or equal to 255"]),
    ({"pixels": [0] * 784, "colour": "red"}, ["colour"]),
    ({"image": [0] * 784}, ["pixels: field required", "image: extra"]),
    ({"pixels": [0] * 784, "return_image": "maybe"}, ["return_image"]),
    ([0] * 784, ["object"]),
    ({"pixels": [[0] * 513] * 2}, ["512"]),
])
def test_wrong_json_content_is_422(client, payload, words):
    problem(client.post("/api/predict", json=payload), 422, *words)


@pytest.mark.parametrize("payload, words", [
    ({"pixels": [True] * 784}, ["pixels.flat.0", "valid number", "boolean true"]),
    ({"pixels": [0] * 783 + [False]}, ["pixels.flat.783", "boolean false"]),
    ({"pixels": [[0] * 28] * 27 + [[0] * 27 + [True]]}, ["pixels.rows.27.27", "boolean"]),
    ({"pixels": ["0"] * 784}, ["pixels.flat.0", "valid number", "string '0'"]),
    ({"pixels": [["12"] * 28] * 28}, ["pixels.rows.0.0", "string '12'"]),
    ({"pixels": [0] * 784, "return_image": 1}, ["return_image", "boolean", "received 1"]),
    ({"pixels": [0] * 784, "preprocess": "true"}, ["preprocess", "string 'true'"]),
])
def test_strings_and_booleans_are_not_numbers(client, payload, words):
    problem(client.post("/api/predict", json=payload), 422, *words)


def test_validation_errors_are_listed(client):
    r = client.post("/api/predict", json={"pixels": [-1, 300] + [0] * 782})
    problem(r, 422, "pixels.flat.0", "pixels.flat.1")
    assert [e["loc"][-1] for e in r.json()["errors"]] == [0, 1]


# Bad input: files -------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels but holds (almost) no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _bomb() -> bytes:
    """A real, valid PNG of 8000 x 6000 black pixels (48 megapixels) in ~50 kB."""
    raw = b"".join(b"\x00" + bytes(8000) for _ in range(6000))  # filter byte + row
    ihdr = struct.pack(">IIBBBBB", 8000, 6000, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("name, data, words", [
    ("notes.txt", b"hello, this is not a picture", ["not an image"]),
    ("empty.png", b"", ["empty"]),
    ("d.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><text>7</text></svg>', ["SVG"]),
    ("d.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", ["EPS"]),
    ("d.pdf", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", ["PDF"]),
    ("huge.png", _png_header_only(100_000, 100_000), ["pixels"]),
    ("bomb.png", _bomb(), ["pixels"]),
    ("cut.png", None, ["truncated"]),
])
def test_bad_files_are_422_naming_the_file(client, test_digits, name, data, words):
    if data is None:
        whole = photo_of(test_digits[0][0])
        data = whole[: len(whole) // 2]
    r = client.post("/api/predict", files={"file": (name, data, "application/octet-stream")})
    detail = problem(r, 422, *words)
    assert name in detail


def test_missing_file_field_is_422(client):
    r = client.post("/api/predict", files={"picture": ("d.png", b"x", "image/png")})
    problem(r, 422, "'file'", "picture")


def test_text_instead_of_a_file_is_422(client):
    problem(client.post("/api/predict", data={"file": "not a file"}, files={"x": ("a", b"")}),
            422, "file upload")


def test_broken_multipart_is_400(client):
    r = client.post("/api/predict", content=b"--xyz\r\ngarbage",
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code in (400, 422), r.text
    problem(r, r.status_code)


def test_multipart_without_boundary_is_4xx(client):
    r = client.post("/api/predict", content=b"abc", headers={"content-type": "multipart/form-data"})
    problem(r, r.status_code)
    assert 400 <= r.status_code < 500


# Bad input: sizes and counts --------------------------------------------------------------------


LIMIT = 5 * 1024 * 1024


def test_declared_oversized_body_is_413_before_reading(client):
    r = client.post("/api/predict", content=b"0" * (LIMIT + 1), headers=JSON)
    problem(r, 413, "too large", "declared")


def test_streamed_oversized_body_without_length_is_413(client):
    def chunks():
        for _ in range(6):
            yield b" " * (1024 * 1024)

    r = client.post("/api/predict", content=chunks(), headers=JSON)
    assert "content-length" not in r.request.headers
    problem(r, 413, "too large")


def test_oversized_upload_is_413(client):
    r = client.post("/api/predict", files={"file": ("big.png", b"\x00" * (LIMIT + 10))})
    problem(r, 413, "too large")


def test_body_just_under_the_limit_is_read(client):
    body = json.dumps({"pixels": [0] * 784}).encode()
    padded = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(padded) == LIMIT
    assert client.post("/api/predict", content=padded, headers=JSON).status_code == 200


def test_too_many_batch_items_is_422(client):
    items = [{"pixels": [0] * 784}] * 65
    problem(client.post("/api/predict/batch", json={"items": items}), 422, "at most 64", "65")


def test_too_many_batch_files_is_4xx(client):
    files = [("files", (f"{i}.png", b"x", "image/png")) for i in range(65)]
    r = client.post("/api/predict/batch", files=files)
    problem(r, r.status_code, "files")
    assert r.status_code in (400, 413, 422)


def test_empty_batch_is_422(client):
    problem(client.post("/api/predict/batch", json={"items": []}), 422, "items")


def test_two_files_to_single_predict_is_4xx(client, test_digits):
    files = [("file", ("a.png", photo_of(test_digits[0][0]), "image/png"))] * 2
    r = client.post("/api/predict", files=files)
    assert 400 <= r.status_code < 500
    problem(r, r.status_code)


# Routing and the last line of defence ---------------------------------------------------------


def test_wrong_method_and_unknown_path_are_json(client):
    assert client.get("/api/predict").status_code == 405
    problem(client.get("/api/predict"), 405)
    problem(client.get("/api/nothing-here"), 404)
    problem(client.put("/api/model", content=b"x"), 405)


def test_catch_all_handler_answers_json_500(app):
    from fastapi.testclient import TestClient

    from mnistlab.serving.app import create_app

    other = create_app(app.state.predictor)

    @other.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    with TestClient(other, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500 and "bug in mnistlab" in r.json()["detail"]
    assert "secret" not in r.text  # no internals leak to the client
    assert other.state.internal_errors == 1


def test_return_image_query_must_be_a_boolean(client):
    r = client.post("/api/predict?return_image=maybe", json={"pixels": [0] * 784})
    problem(r, 422, "boolean")
    assert r.json()["errors"][0]["loc"] == ["query", "return_image"]


def test_unknown_query_parameters_are_refused(client):
    r = client.post("/api/predict?return_imgae=true", json={"pixels": [0] * 784})
    problem(r, 422, "return_imgae")


# The accepted shapes: one description for README, /docs and the validator ---------------------


def test_readme_and_docs_describe_the_shapes_the_validator_accepts(client):
    from pathlib import Path

    from mnistlab.serving.pixels import accepted_shapes

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert accepted_shapes(28) in " ".join(readme.split())
    spec = client.get("/openapi.json").json()
    pixels = spec["components"]["schemas"]["PixelsRequest"]["properties"]["pixels"]
    assert pixels["description"] == accepted_shapes(28)


@pytest.mark.parametrize("shape, as_is", [
    ((28, 28), True), ((784,), True), ((20, 30), False), ((1, 1), False), ((512, 3), False),
])
def test_each_accepted_shape_is_answered_as_described(client, test_digits, shape, as_is):
    rng = np.random.default_rng(sum(shape))
    pixels = (test_digits[0][0].reshape(shape) if as_is
              else rng.integers(0, 256, shape, dtype=np.uint8))
    r = client.post("/api/predict", json={"pixels": pixels.tolist(), "return_image": True})
    assert r.status_code == 200, r.text
    seen = np.array(r.json()["image"])
    assert seen.shape == (28, 28)
    # "used as they are": the model saw exactly the numbers sent; a picture was preprocessed.
    assert np.array_equal(seen.ravel(), pixels.ravel()) == as_is


@pytest.mark.parametrize("pixels", [[0] * 783, [0] * 785, [[0] * 28] * 27 + [[0] * 29],
                                    [[0] * 513], [[0]] * 513])
def test_other_shapes_are_refused_naming_the_accepted_ones(client, pixels):
    from mnistlab.serving.pixels import MAX_SIDE, accepted_shapes

    detail = problem(client.post("/api/predict", json={"pixels": pixels}), 422)
    assert accepted_shapes(28) in detail or str(MAX_SIDE) in detail, detail


def test_a_run_is_loaded_once(run28, monkeypatch):
    from mnistlab.runs import Run
    from mnistlab.serving.app import create_app

    loads = []
    real = Run.load_model

    def counted(self, *args, **kwargs):
        loads.append(self.path)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Run, "load_model", counted)
    app = create_app(run28.path)
    assert loads == [run28.path]
    assert app.state.info.params == 87_374 and app.state.predictor.image_size == 28
