"""The draw-a-digit page in real headless Chromium against ``mnistlab serve`` on loopback.

The server is the real CLI in a subprocess (default host, a free port). The browser is Debian's
/usr/bin/chromium driven by Playwright (never a downloaded one). Strokes are drawn with the
mouse; the test checks the label, the ten bars and the "what the model saw" image, that a second
stroke changes the answer, Undo and Clear, a photo upload, keyboard focus, a phone-sized
viewport without horizontal scrolling, and that there are no console errors, no failed requests
and no request leaving the server's origin. Screenshots go to test-artifacts/serve-*.png.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/serving/run28.py

from serving.run28 import make_run28  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
# Screenshots are kept as test artifacts (ignored by git); $MNISTLAB_ARTIFACTS moves them.
ARTIFACTS = Path(os.environ.get("MNISTLAB_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "test-artifacts")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium (/usr/bin/chromium) is not "
                       "installed; apt-get install chromium (never download a browser)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``mnistlab serve RUN --port P`` in a subprocess; yields ``(base_url, run)``."""
    run = make_run28(tmp_path_factory)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", str(run.path),
                             "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the server did not become ready"
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.25)
    try:
        yield url, run
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert f"at {url}/" in out, out  # the CLI printed where it serves


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Watch:
    """Collects console errors, page errors, failed requests and every requested URL."""

    def __init__(self, page):
        self.errors, self.failed, self.urls = [], [], []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        page.on("request", lambda r: self.urls.append(r.url))

    def assert_clean(self, origin: str):
        assert self.errors == [], self.errors
        assert self.failed == [], self.failed
        assert all(u.startswith((origin, "data:", "blob:")) for u in self.urls), self.urls


def stroke(page, points):
    """Draw one stroke through ``points`` given as fractions (x, y) of the pad, then wait until the
    page shows the answer for the finished picture.

    The page asks for a prediction while the pointer moves, so bars can show the answer for a
    half-drawn stroke; ``body[data-predicting]`` turns "no" only once the newest picture's answer
    is shown (set "yes" by the pointer-up handler, before ``mouse.up`` returns).
    """
    box = page.locator("#pad").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    wait_until_answered(page)


def wait_until_answered(page) -> None:
    page.wait_for_function("() => document.body.dataset.predicting === 'no'", timeout=20_000)


def settled_screenshot(page, name: str, full_page: bool = True) -> None:
    page.wait_for_timeout(300)  # let the bars' 0.15 s width transition finish (a picture only)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


def bars(page) -> list[str]:
    return page.locator("#bars .pct").all_inner_texts()


def wait_for_bars_other_than(page, old: list[str]) -> list[str]:
    page.wait_for_function(
        "old => { const now = [...document.querySelectorAll('#bars .pct')].map(e => e.textContent);"
        " return now[0] !== '–' && now.join() !== old.join(); }", arg=old, timeout=20_000)
    return bars(page)


def seen_ink(page) -> int:
    return page.evaluate(
        "() => { const c = document.getElementById('seen');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; }")


def test_draw_undo_clear_upload_on_desktop(served, browser):
    url, run = served
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page)
    page.goto(url + "/", wait_until="load")

    # The served run is described, and there is one bar per class.
    page.wait_for_function("() => document.getElementById('model-info').textContent.includes('mnist_sample')")
    info = page.inner_text("#model-info")
    assert run.path.name in info and "test accuracy" in info
    assert page.locator("#bars li").count() == 10
    assert page.locator("#bars .name").all_inner_texts() == [str(i) for i in range(10)]
    assert page.is_disabled("#undo") and page.is_disabled("#clear")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-empty.png"), full_page=True)

    # A vertical stroke: a label and ten filled-in bars appear, and the image the model saw.
    stroke(page, [(0.5, 0.15), (0.5, 0.85)])
    first = wait_for_bars_other_than(page, ["–"] * 10)
    assert len(first) == 10 and all(t.endswith("%") for t in first)
    page.wait_for_function("() => document.getElementById('label').dataset.label !== undefined")
    first_label = page.get_attribute("#label", "data-label")
    assert first_label == "1", page.inner_text("#label")  # drawn line -> PNG -> preprocess -> 1
    assert page.inner_text("#label").startswith("It looks like")
    assert seen_ink(page) > 0
    assert page.locator("#bars li.top").count() == 1

    # A second stroke (a bar across the top, like a 7) changes the probabilities.
    stroke(page, [(0.2, 0.15), (0.5, 0.15)])
    second = wait_for_bars_other_than(page, first)
    assert second != first
    settled_screenshot(page, "serve-drawn.png")

    # Undo removes the second stroke: the picture, hence the answer, is the first one again.
    page.click("#undo")
    wait_until_answered(page)
    page.wait_for_function(
        "want => [...document.querySelectorAll('#bars .pct')].map(e => e.textContent).join() "
        "=== want.join()", arg=first, timeout=20_000)
    assert page.get_attribute("#label", "data-label") == first_label

    # Clear resets everything.
    page.click("#clear")
    assert page.inner_text("#label") == "Draw a digit to see a prediction."
    assert bars(page) == ["–"] * 10 and seen_ink(page) == 0
    assert page.is_disabled("#undo") and page.is_disabled("#clear")

    # Upload a photo: dark ink on white paper, 10x the digit's size.
    from PIL import Image

    with np.load(run.path / "predictions.npz", allow_pickle=False) as f:
        digit = f["images"][0]
    ink = np.kron(digit, np.ones((10, 10), np.uint8))
    photo = ARTIFACTS / "serve-upload-input.png"
    Image.fromarray(255 - ink).save(photo)
    page.set_input_files("#upload", str(photo))
    wait_for_bars_other_than(page, ["–"] * 10)
    wait_until_answered(page)
    page.wait_for_function("() => document.getElementById('label').dataset.label !== undefined")
    assert seen_ink(page) > 0
    settled_screenshot(page, "serve-upload.png")

    # Keyboard: the buttons are reachable with Tab and show a visible focus ring.
    page.locator("body").focus()
    reached = set()
    for _ in range(8):
        page.keyboard.press("Tab")
        active = page.evaluate("() => document.activeElement.id")
        if active in ("clear", "upload-button"):
            outline = page.evaluate(
                "() => getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("none", ""), outline
            reached.add(active)
    assert reached == {"clear", "upload-button"}
    watch.assert_clean(url)
    page.close()


def in_viewport(page, selector: str) -> bool:
    """Whether the element is entirely inside the viewport, as it stands (no scrolling)."""
    return page.evaluate(
        "sel => { const r = document.querySelector(sel).getBoundingClientRect();"
        " return r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight"
        " && r.right <= window.innerWidth; }", selector)


def test_phone_viewport(served, browser):
    url, _ = served
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    watch = Watch(page)
    page.goto(url + "/", wait_until="load")
    page.wait_for_function("() => document.getElementById('model-info').textContent.includes('mnist_sample')")
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"horizontal scroll on a phone: {widths}"
    pad = page.locator("#pad").bounding_box()
    assert 250 <= pad["width"] <= 390 and abs(pad["width"] - pad["height"]) < 2
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-phone-empty.png"))
    stroke(page, [(0.3, 0.2), (0.7, 0.2), (0.4, 0.85)])  # a 7
    wait_for_bars_other_than(page, ["–"] * 10)
    # The prediction is visible while drawing: pad, label and every bar on one screen.
    for selector in ("#pad", "#label", "#bars li:last-child"):
        assert in_viewport(page, selector), selector
    assert page.evaluate("() => window.scrollY") == 0
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"horizontal scroll on a phone: {widths}"
    settled_screenshot(page, "serve-phone.png", full_page=False)
    watch.assert_clean(url)
    context.close()


def test_api_docs_render_offline(served, browser):
    url, _ = served
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page)
    page.goto(url + "/docs", wait_until="load")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    summaries = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/api/predict", "/api/predict/batch", "/api/model"} <= {s.strip() for s in summaries}
    page.screenshot(path=str(ARTIFACTS / "serve-docs.png"))
    watch.assert_clean(url)
    page.close()
