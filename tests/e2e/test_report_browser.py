"""report.html and compare.html opened from disk in real headless Chromium.

Every image decodes, nothing is fetched; at 1280 px the confusion-matrix counts are at least 11 px;
at 390 px (a phone) neither page scrolls sideways (wide tables scroll inside their own box) and a
figure opens at full size on a tap. Screenshots go to test-artifacts/ (or $MNISTLAB_ARTIFACTS).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/reportkit.py

from reportkit import write_run  # noqa: E402

from mnistlab.report import FIGURES, build_report, compare_runs  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MNISTLAB_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "test-artifacts")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium (/usr/bin/chromium) is not "
        "installed; apt-get install chromium (never download a browser)",
    ),
]


def test_report_renders_offline_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    run = write_run(
        tmp_path,
        name="r-browser",
        image_shape=(28, 28),
        dataset="mnist",
        n_test=40,
        class_names=("<b>zero</b>", *map(str, range(1, 10))),
    )
    report = build_report(run)

    failed, errors, requests = [], [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri(), wait_until="load")
            widths = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
            )
            title = page.title()
            heading = page.inner_text("h1")
            zero = page.locator("td", has_text="<b>zero</b>").count()
            # The confusion matrix as shown: displayed width / PNG width.
            scale = page.eval_on_selector(
                "#confusion img", "i => i.getBoundingClientRect().width / i.naturalWidth"
            )
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()

    assert failed == [] and errors == []
    # Only the page itself and its data: URIs; nothing from the network.
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    assert len(widths) == len(FIGURES) and all(w > 0 for w in widths), widths
    assert "r-browser" in title and heading == "mnistlab report"
    assert zero >= 1  # the class name shows as text, not as markup
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    # Counts in the confusion matrix: points x dpi / 72 x shown scale >= 11 px.
    from mnistlab import plots

    fig = plots.confusion_figure(np.eye(10, dtype=int), [str(i) for i in range(10)])
    (size,) = {t.get_fontsize() for t in fig.axes[0].texts}
    assert size * fig.dpi / 72 * scale >= 11, (size, scale)


def page_widths(page) -> list[int]:
    return page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")


def test_report_and_compare_fit_a_phone(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    long = "20250101-000000-tutorial+hidden=100-64-32+optimizer=adam-fashion_mnist-seed111"
    a = write_run(tmp_path, name=long, image_shape=(28, 28), dataset="fashion_mnist", n_test=40,
                  class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                               "Shirt", "Sneaker", "Bag", "Ankle boot"))
    b = write_run(tmp_path, name=long + "-2", image_shape=(28, 28), dataset="fashion_mnist",
                  n_test=40, seed=7, epochs=5)
    report = build_report(a)
    compare = compare_runs([a, b], out=tmp_path / "cmp").html_path

    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844},
                                          is_mobile=True, has_touch=True)
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            ARTIFACTS.mkdir(exist_ok=True)
            page.goto(report.as_uri(), wait_until="load")
            report_widths = page_widths(page)
            page.screenshot(path=str(ARTIFACTS / "report-390.png"), full_page=True)
            # A tap on a figure shows it at full size, in its own scrolling box.
            img = page.locator("#confusion img")
            shown = img.bounding_box()["width"]
            natural = img.evaluate("i => i.naturalWidth")
            img.tap()
            zoomed = img.bounding_box()["width"]
            zoomed_widths = page_widths(page)
            page.screenshot(path=str(ARTIFACTS / "report-390-zoomed.png"))
            page.goto(compare.as_uri(), wait_until="load")
            compare_widths = page_widths(page)
            page.screenshot(path=str(ARTIFACTS / "compare-390.png"), full_page=True)
        finally:
            browser.close()

    assert errors == []
    assert report_widths[0] <= report_widths[1], f"report.html scrolls sideways: {report_widths}"
    assert compare_widths[0] <= compare_widths[1], f"compare.html scrolls sideways: {compare_widths}"
    assert shown < natural and abs(zoomed - natural) <= 2, (shown, zoomed, natural)  # + border
    assert zoomed_widths[0] <= zoomed_widths[1], zoomed_widths
