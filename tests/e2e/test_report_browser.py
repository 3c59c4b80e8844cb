"""report.html opened from disk in real headless Chromium: every image decodes, nothing is fetched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/reportkit.py

from reportkit import write_run  # noqa: E402

from mnistlab.report import FIGURES, build_report  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
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
