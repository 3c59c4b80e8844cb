"""mnistlab compare: only differing config keys, metrics, overlaid curves, self-contained HTML."""

from __future__ import annotations

import base64
import re

import pytest
from click.testing import CliRunner
from reportkit import check_png, write_run

from mnistlab.errors import RunError
from mnistlab.report import compare_runs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a = write_run(root, name="run-a", epochs=3, seed=111)
    b = write_run(root, name="run-b", epochs=5, seed=7)
    return a, b


def test_compare_lists_only_keys_that_differ(two_runs, tmp_path):
    result = compare_runs(two_runs, out=tmp_path)
    keys = [k for k, _ in result.config_diff]
    assert keys == ["seed", "train.epochs"]
    assert dict(result.config_diff)["train.epochs"] == ["3", "5"]
    text = result.table()
    assert "train.epochs" in text
    assert "model.hidden" not in text  # the same in both runs
    # Short names (label and seed), not the long directory names.
    # Only what tells the runs apart: both share hidden=16-8 and batch_size=16.
    assert result.labels == ["tutorial+epochs=3-seed111", "tutorial+epochs=5-seed7"]
    assert "tutorial+epochs=3-seed111" in text and "run-a" not in text


def test_short_names_show_what_differs_and_letter_clashes(tmp_path):
    a = write_run(tmp_path, name="20250101-000000-tutorial-digits-seed1", seed=1, epochs=5)
    b = write_run(tmp_path, name="20250101-000001-tutorial-digits-seed1", seed=1)
    c = write_run(tmp_path, name="20250101-000002-tutorial-digits-seed1-2", seed=1)
    result = compare_runs([a, b], out=tmp_path / "ab")
    assert result.labels == ["tutorial+epochs=5-seed1", "tutorial+epochs=3-seed1"]
    result = compare_runs([b, c], out=tmp_path / "bc")
    assert result.labels == ["A: tutorial-seed1", "B: tutorial-seed1"]
    html = result.html_path.read_text(encoding="utf-8")
    # The legend maps each short name to its directory.
    assert b.name in html and c.name in html


def test_compare_by_default_writes_a_new_folder_and_never_overwrites(two_runs, tmp_path):
    root = tmp_path / "runs"
    first = compare_runs(two_runs, root=root)
    first_html = first.html_path.read_text(encoding="utf-8")
    second = compare_runs(two_runs, root=root)
    assert first.html_path.parent != second.html_path.parent
    for result in (first, second):
        assert result.html_path.parent.parent == root
        assert result.html_path.parent.name.startswith("compare-")
    assert first.html_path.read_text(encoding="utf-8") == first_html  # untouched


def test_compare_writes_self_contained_html_and_png(two_runs, tmp_path):
    out = tmp_path / "cmp"
    result = compare_runs(two_runs, out=out)
    assert result.png_path == out / "compare.png" and result.html_path == out / "compare.html"
    check_png(result.png_path.read_bytes())
    html = result.html_path.read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == 1 and srcs[0].startswith("data:image/png;base64,")
    check_png(base64.b64decode(srcs[0].split(",", 1)[1]))
    assert "<script" not in html and "http" not in html


def test_identical_configs_say_so(tmp_path):
    a = write_run(tmp_path, name="x1")
    b = write_run(tmp_path, name="x2")
    result = compare_runs([a, b], out=tmp_path)
    assert result.config_diff == []
    assert "none (same configuration)" in result.table()


def test_compare_needs_two_existing_runs(two_runs, tmp_path):
    with pytest.raises(RunError, match="at least two run directories; received 1"):
        compare_runs([two_runs[0]], out=tmp_path)
    with pytest.raises(RunError, match="not found"):
        compare_runs([two_runs[0], tmp_path / "missing"], out=tmp_path)


def test_cli_compare(two_runs, tmp_path, monkeypatch):
    from mnistlab.cli import cli

    result = CliRunner().invoke(cli, ["compare", *map(str, two_runs), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "train.epochs" in result.output and "test acc" in result.output
    assert (tmp_path / "compare.html").exists() and (tmp_path / "compare.png").exists()

    # Without --out: a new folder under ./runs, its path printed; nothing in the current folder.
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    result = CliRunner().invoke(cli, ["compare", *map(str, two_runs)])
    assert result.exit_code == 0, result.output
    (made,) = (tmp_path / "cwd" / "runs").iterdir()
    assert made.name.startswith("compare-") and f"{made.name}/compare.html" in result.output
    assert not (tmp_path / "cwd" / "compare.html").exists()

    result = CliRunner().invoke(cli, ["compare", str(two_runs[0])])
    assert result.exit_code == 1
    assert result.output.startswith("Error: compare needs at least two run directories")


def test_compare_html_escapes_run_names_and_config_strings(tmp_path):
    from html.parser import HTMLParser

    evil = "<script>alert('x')</script>"
    name = "<img src=x onerror=alert(1)>"
    a = write_run(tmp_path, name=name, dataset=evil)
    b = write_run(tmp_path, name="plain")
    result = compare_runs([a, b], out=tmp_path / "cmp")
    assert dict(result.config_diff)["data.dataset"] == [repr(evil), "'digits'"]
    raw = result.html_path.read_text(encoding="utf-8")
    assert "<script" not in raw and "<img src=x" not in raw

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.text = [], ""

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

        def handle_data(self, data):
            self.text += data

    page = Text()
    page.feed(raw)
    assert page.tags.count("img") == 1 and "script" not in page.tags
    assert name in page.text and repr(evil) in page.text  # shown as text, not as markup
    assert "mnistlab compare: 2 runs" in page.text
