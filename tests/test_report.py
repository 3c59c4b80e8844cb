"""report.html: self-contained, every figure embedded, run strings escaped, verdict per dataset."""

from __future__ import annotations

import base64
import json
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from reportkit import check_png, write_run

from mnistlab.errors import RunError
from mnistlab.report import FIGURES, build_report, parity_verdict
from mnistlab.report.kit import environment
from mnistlab.report.page import render_report
from mnistlab.runs import load_run

FASHION = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class _Page(HTMLParser):
    """Collects the tags, <img> sources and visible text of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.images, self.links, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


class _Sections(HTMLParser):
    """Splits a page by ``<section id=...>``: per id, its visible text and its number of <img>."""

    def __init__(self):
        super().__init__()
        self.order, self.text, self.images, self._open = [], {}, {}, []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            sid = dict(attrs)["id"]
            self.order.append(sid)
            self.text[sid], self.images[sid] = "", 0
            self._open.append(sid)
        elif tag == "img" and self._open:
            self.images[self._open[-1]] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self._open.pop()

    def handle_data(self, data):
        if self._open:
            self.text[self._open[-1]] += data


def sections(html: str) -> _Sections:
    page = _Sections()
    page.feed(html)
    return page


def parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.full_text = " ".join(page.text)
    return page


def assert_embeds_every_figure(report):
    page = parse(report)
    assert len(page.images) == len(FIGURES)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        check_png(base64.b64decode(src.split(",", 1)[1], validate=True))
    # Self-contained: no scripts, stylesheets or other fetched resources.
    assert "script" not in page.tags and "link" not in page.tags
    # Links only within the page: the table of contents.
    assert page.links and all(link.startswith("#") for link in page.links), page.links
    ids = set(re.findall(r'<section id="([^"]+)"', report.read_text(encoding="utf-8")))
    assert {link[1:] for link in page.links} == ids  # every section listed, no dead entry
    return page


@pytest.fixture(scope="module")
def handmade_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("runs"))


def test_report_for_8x8_digits_has_every_figure(handmade_run):
    report = build_report(handmade_run)
    assert report == handmade_run / "report.html"
    for name in FIGURES:
        check_png((handmade_run / f"{name}.png").read_bytes())
    page = assert_embeds_every_figure(report)
    text = page.full_text
    assert "Not comparable" in text and "8x8" in text
    assert "(70, 8, 8)" in text and "(30, 8, 8)" in text and "(60, 8, 8)" in text
    for needle in ("dense1", "Dense (relu)", "(None, 16)", "precision", "weighted avg"):
        assert needle in text


def test_report_for_28x28_fashion_has_every_figure_and_the_expected_range(tmp_path):
    run = write_run(
        tmp_path,
        name="r-fashion",
        image_shape=(28, 28),
        dataset="fashion_mnist",
        class_names=FASHION,
        n_test=40,
    )
    page = assert_embeds_every_figure(build_report(run))
    assert "harder dataset" in page.full_text and "0.79-0.90" in page.full_text
    assert "Ankle boot" in page.full_text


def test_zero_mistakes_still_builds_a_complete_report(tmp_path):
    run = write_run(tmp_path, all_correct=True)
    page = assert_embeds_every_figure(build_report(run))
    assert "1.0000" in page.full_text


def test_run_strings_are_html_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    names = (evil, "<img src=x onerror=alert(1)>", "a&b", *map(str, range(3, 10)))
    run = write_run(
        tmp_path,
        class_names=names,
        command=("mnistlab", "train", "--set", '"><iframe src="http://evil">'),
    )
    raw = build_report(run).read_text(encoding="utf-8")
    assert evil not in raw and "<iframe" not in raw and "onerror=alert(1)>" not in raw
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in raw
    assert "a&amp;b" in raw
    page = assert_embeds_every_figure(run / "report.html")
    assert "iframe" not in page.tags
    # The escaped text still reads as the original to a human.
    assert evil in page.full_text and '"><iframe src="http://evil">' in page.full_text


def test_export_results_are_shown(tmp_path):
    run = write_run(tmp_path)
    (run / "export.json").write_text(
        json.dumps(
            {
                "formats": {
                    "onnx": {
                        "path": "model.onnx",
                        "max_abs_diff": 1.5e-7,
                        "label_agreement": 1.0,
                        "ok": True,
                    }
                }
            }
        )
    )
    text = parse(build_report(run)).full_text
    assert "Exports" in text and "model.onnx" in text and "1.50e-07" in text


def test_report_needs_a_complete_run(tmp_path):
    with pytest.raises(RunError, match="not found"):
        build_report(tmp_path / "nope")
    run = write_run(tmp_path, status="interrupted")
    with pytest.raises(RunError, match="interrupted"):
        build_report(run)


def test_damaged_arrays_give_a_clear_error(tmp_path):
    run = write_run(tmp_path)
    (run / "predictions.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RunError, match="predictions.npz is unreadable"):
        build_report(run)
    np.savez(run / "predictions.npz", labels=np.zeros(3, dtype=np.int64))
    with pytest.raises(RunError, match=r"lacks the arrays \['images', 'probabilities'\]"):
        build_report(run)


def test_report_diagram_without_graphviz(tmp_path, monkeypatch):
    run = write_run(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot`: plot_model fails for real
    page = assert_embeds_every_figure(build_report(run))
    assert "drawn with matplotlib" in page.full_text


@pytest.mark.parametrize(
    ("dataset", "accuracy", "expected"),
    [
        ("mnist", 0.9650, "Matches the tutorial"),
        ("mnist", 0.9800, "Better than the tutorial by 1.61 points"),
        ("mnist", 0.9000, "Below the tutorial by 6.39 points"),
        ("fashion_mnist", 0.8700, "is inside that range"),
        ("fashion_mnist", 0.8466, "is inside that range: as expected"),
        ("fashion_mnist", 0.7500, "is below that range: with the tutorial's recipe about 1 seed"),
        ("fashion_mnist", 0.9200, "is above that range"),
        ("digits", 0.97, "Not comparable"),
        ("mnist_sample", 0.93, "Not directly comparable"),
        ("custom", 0.99, "your own data"),
    ],
)
def test_parity_verdict_accounts_for_the_dataset(dataset, accuracy, expected):
    assert expected in parity_verdict(dataset, accuracy, 87_374, [])


def test_fashion_range_is_plain_keras_mean_plus_minus_two_sd():
    from mnistlab.report.parity import FASHION_KERAS, FASHION_RANGE

    mean, sd = FASHION_KERAS["mean"], FASHION_KERAS["sd"]
    assert (round(mean - 2 * sd, 2), round(mean + 2 * sd, 2)) == FASHION_RANGE
    # A default run (the 0.8466) reads as expected, never as a failure.
    text = parity_verdict("fashion_mnist", 0.8466, 87_374, [])
    assert "as expected" in text and "fail" not in text.lower()


def test_parity_verdict_mentions_a_changed_recipe():
    text = parity_verdict("mnist", 0.97, 87_374, ["train.epochs 5 (tutorial 50)"])
    assert "changed the recipe" in text and "train.epochs 5 (tutorial 50)" in text


def test_cli_report_rebuilds_from_the_run_directory(handmade_run):
    from mnistlab.cli import cli

    for name in FIGURES:
        (handmade_run / f"{name}.png").unlink(missing_ok=True)
    result = CliRunner().invoke(cli, ["report", str(handmade_run), "--no-graphviz"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(handmade_run / "report.html")
    assert all((handmade_run / f"{name}.png").exists() for name in FIGURES)
    assert "matplotlib" in parse(handmade_run / "report.html").full_text


def test_cli_report_error_is_one_clean_line(tmp_path):
    from mnistlab.cli import cli

    result = CliRunner().invoke(cli, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: run directory not found")
    assert "Traceback" not in result.output


def test_real_training_on_digits_builds_the_report(tmp_path):
    from mnistlab.config import load_config
    from mnistlab.training import train

    config = load_config("quick", overrides=["data.dataset='digits'", "train.epochs=2"])
    run = train(config, out=tmp_path, command=["pytest"])
    report = run.path / "report.html"
    page = assert_embeds_every_figure(report)
    assert "Not comparable" in page.full_text
    assert "2 of 2" in page.full_text


# --- the template kit and each section ---------------------------------------------------------

SECTIONS = [
    "summary",
    "parity",
    "data",
    "model",
    "curves",
    "metrics",
    "confusion",
    "prediction",
    "mistakes",
    "confidence",
    "weights",
    "exports",
    "provenance",
]
FIGURE_SECTION = {
    "data": "samples",
    "model": "model",
    "curves": "curves",
    "confusion": "confusion",
    "prediction": "prediction",
    "mistakes": "mistakes",
    "confidence": "confidence",
    "weights": "weights",
}


def test_the_template_environment_escapes_values_and_macro_arguments():
    env = environment()
    evil = "<script>alert('x')</script>"
    assert env.from_string("<p>{{ x }}</p>").render(x=evil) == (
        "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</p>"
    )
    macros = env.get_template("macros.html.j2").module
    table = str(macros.table([evil], [[evil, "<b>"]]))
    pairs = str(macros.pairs([(evil, "<i>")]))
    assert "<script" not in table + pairs and "<b>" not in table and "<i>" not in pairs
    assert table.count("&lt;script&gt;") == 2 and "&lt;b&gt;" in table and "&lt;i&gt;" in pairs


def test_every_section_renders_with_its_content(tmp_path):
    run = write_run(tmp_path)
    (run / "export.json").write_text(
        json.dumps({"formats": {"tflite": {"path": "model.tflite", "ok": False}}})
    )
    page = sections(build_report(run).read_text(encoding="utf-8"))
    assert page.order == SECTIONS
    for sid in SECTIONS:
        assert page.images[sid] == (1 if sid in FIGURE_SECTION else 0), sid
    expected = {
        "summary": ["seed", "111", "3 of 3", "sgd, learning rate 0.01, batch 16", "5.0 s"],
        "parity": ["Tutorial parity", "0.9639", "87,374", "Not comparable"],
        "data": ["(70, 8, 8)", "(30, 10)", "10 classes: 0, 1, 2", "test fixture", "seed 111"],
        "model": ["dense1", "Dense (relu)", "(None, 16)", "total", "drawn "],
        "curves": ["Lowest validation loss 0.7333 at epoch 3"],
        "metrics": ["Test accuracy", "on 60 test images", "f1-score", "macro avg"],
        "confidence": ["How sure the model is"],
        "exports": ["model.tflite", "NO"],
        "provenance": ["keras", "mnistlab train --dataset digits", "dataset: data.npz", "ab" * 32],
    }
    for sid, needles in expected.items():
        for needle in needles:
            assert needle in page.text[sid], (sid, needle)
    # Each provenance fact once (the manifest records mnistlab's version twice).
    assert (
        page.text["provenance"].count("mnistlab")
        == page.text["provenance"].count("mnistlab train") + 1
    )


def test_sections_without_their_optional_parts(tmp_path):
    """No figures, an unreadable export.json, no weights figure: each place says so or stays empty."""
    run = load_run(write_run(tmp_path))
    (run.path / "export.json").write_text("{not json")
    layers = [
        {
            "name": "dense1",
            "type": "Dense",
            "activation": "relu",
            "output_shape": "(None, 16)",
            "params": 1040,
        },
    ]
    note = "not drawn: the first Dense layer does not see the raw image pixels"
    html = render_report(run, layers, pngs={}, notes={"weights": note, "model": "drawn by hand"})
    page = sections(html)
    assert page.order == SECTIONS
    assert sum(page.images.values()) == 0
    assert note in page.text["weights"] and "drawn by hand" in page.text["model"]
    assert "export.json is unreadable" in page.text["exports"]
    assert "1,040" in page.text["model"]
    (run.path / "export.json").unlink()
    assert "exports" not in sections(render_report(run, layers, {}, {})).order


def test_config_strings_manifest_strings_and_the_run_name_are_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    name = "<img src=x onerror=alert(1)>"
    run = write_run(tmp_path, name=name, dataset=evil)  # config data.dataset and manifest
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["dataset"]["source"] = "<b>source</b>"
    manifest["versions"]["<i>lib</i>"] = "<u>1.0</u>"
    (run / "manifest.json").write_text(json.dumps(manifest))
    raw = build_report(run).read_text(encoding="utf-8")
    for markup in ("<script", "<img src=x", "<b>source", "<i>lib", "<u>1.0"):
        assert markup not in raw, markup
    page = sections(raw)
    assert evil in page.text["summary"] and evil in page.text["parity"]
    assert "<b>source</b>" in page.text["data"]
    assert name in page.text["provenance"] and "<u>1.0</u>" in page.text["provenance"]
    assert "<title>mnistlab report: &lt;img src=x onerror=alert(1)&gt;</title>" in raw


def test_templates_and_css_are_package_data():
    """Every non-Python file of mnistlab/report is matched by pyproject's package-data globs."""
    root = Path(__file__).resolve().parents[1]
    setup = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    patterns = setup["setuptools"]["package-data"]["mnistlab.report"]
    package = root / "src" / "mnistlab" / "report"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    files = {
        p
        for p in package.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert len(files) >= 10  # the templates and the stylesheet
    assert files <= shipped, sorted(str(p.relative_to(package)) for p in files - shipped)
