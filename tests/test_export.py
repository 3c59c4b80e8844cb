"""Export: every format round-trips through its own runtime; a doctored export is refused.

The export itself runs Keras on the TensorFlow backend in a child process (~20-40 s), so the
formats are exported once, together, in a module fixture; the other tests reuse the files.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from mnistlab.cli import cli
from mnistlab.errors import ConfigError, ExportError, RunError
from mnistlab.export import (
    FORMATS,
    MAX_ABS_DIFF,
    export_run,
    record_exports,
    run_export,
    verify_export,
)
from mnistlab.files import sha256_file
from mnistlab.runs import load_run

NEEDED = {"tensorflow": "TensorFlow", "tf2onnx": "tf2onnx", "onnx": "onnx",
          "onnxruntime": "onnxruntime", "ai_edge_litert": "ai-edge-litert"}
MISSING = [name for mod, name in NEEDED.items() if importlib.util.find_spec(mod) is None]
needs_tools = pytest.mark.skipif(
    bool(MISSING), reason=f"export extras not installed: {', '.join(MISSING)} (pip install 'mnistlab[export]')"
)


@pytest.fixture(scope="module")
def run_copy(digits_run, tmp_path_factory):
    """A private copy of the session's digits run (exports write into the run directory)."""
    dst = tmp_path_factory.mktemp("export") / digits_run.path.name
    shutil.copytree(digits_run.path, dst)
    return dst


@pytest.fixture(scope="module")
def exported(run_copy):
    """Export all three formats through the real CLI, once, in a process of its own.

    A process of its own, because TensorFlow's and LiteRT's C++ logging goes to the process's
    stderr, which only a real process shows. The run gets its report first, as after `train`.

    Returns:
        ``(run_path, completed process, report.html before the export)``.
    """
    if MISSING:
        pytest.skip(f"export extras not installed: {', '.join(MISSING)}")
    from mnistlab.report import build_report

    before = build_report(run_copy).read_text(encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "mnistlab", "export", str(run_copy), "--format", "onnx",
         "--format", "litert", "--format", "savedmodel"],
        capture_output=True, text=True, timeout=900)
    return run_copy, proc, before


@needs_tools
def test_every_format_round_trips_and_is_recorded(exported):
    run_path, res, _ = exported
    assert res.returncode == 0, res.stderr
    record = json.loads((run_path / "export.json").read_text())["formats"]
    assert set(record) == set(FORMATS)
    preds = np.load(run_path / "predictions.npz", allow_pickle=False)
    for fmt, r in record.items():
        path = run_path / r["path"]
        assert path == run_path / "export" / FORMATS[fmt][1]
        assert r["ok"] and r["max_abs_diff"] <= MAX_ABS_DIFF and r["label_agreement"] == 1.0
        assert r["n_images"] == 360 and r["bytes"] > 10_000 and r["exported_at"]
        if path.is_file():
            assert r["sha256"] == sha256_file(path) and r["bytes"] == path.stat().st_size
        assert f"{fmt}: export/" in res.stdout
        # Independently of export.py's own check: the file's runtime reproduces the probabilities
        # recorded at training time.
        got = run_export(fmt, path, preds["images"].astype(np.float32) / 255)
        np.testing.assert_allclose(got, preds["probabilities"], atol=MAX_ABS_DIFF, rtol=0)
        assert np.array_equal(got.argmax(axis=1), preds["predicted"])


@needs_tools
@pytest.mark.parametrize("delta, label_change", [(1e-3, False), (5.0, True)])
def test_a_doctored_onnx_file_is_refused(exported, tmp_path, delta, label_change):
    import onnx
    from onnx import numpy_helper

    run_path, res, _ = exported
    assert res.returncode == 0, res.stderr
    original = run_path / "export" / "model.onnx"
    assert verify_export(run_path, "onnx", original)["ok"]  # the untouched file passes

    model = onnx.load(str(original))
    # The output layer's bias is the 10-element initializer.
    bias = next(t for t in model.graph.initializer if list(t.dims) == [10])
    values = numpy_helper.to_array(bias).copy()
    values[3] += delta
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    doctored = tmp_path / "doctored.onnx"
    onnx.save(model, str(doctored))

    with pytest.raises(ExportError, match="does not match the Keras model") as err:
        verify_export(load_run(run_path), "onnx", doctored)  # a Run object or its directory
    agree = "labels agree on 100.00%" in str(err.value)
    assert agree != label_change  # a small change keeps labels and is still refused on Δp


@needs_tools
def test_export_says_no_more_than_its_results_and_the_report_shows_them(exported):
    run_path, res, before = exported
    assert res.returncode == 0, res.stderr
    for chatter in ("oneDNN", "absl", "XNNPACK", "I0000", "W0000", "INFO:"):
        assert chatter not in res.stderr, res.stderr
    assert res.stdout.splitlines()[-1] == f"Report: {run_path / 'report.html'}"
    after = (run_path / "report.html").read_text(encoding="utf-8")
    for name in ("export/model.onnx", "export/model.tflite", "export/saved_model"):
        assert name not in before and name in after  # rebuilt without `mnistlab report`


def test_native_stderr_chatter_is_dropped_and_errors_are_logged(capfd, caplog):
    from mnistlab.export import _native_stderr_filtered

    error = "E0000 00:00:1796013347.633923   13870 op_kernel.cc:1] something really broke"
    with caplog.at_level("WARNING", logger="mnistlab.export"), _native_stderr_filtered():
        # Written to file descriptor 2 as C++ code does, past sys.stderr.
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n"
                    b"I0000 00:00:1796013347.633923   13870 port.cc:153] oneDNN custom operations "
                    b"are on.\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                    + error.encode() + b"\n")
    assert capfd.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records] == [f"TensorFlow/LiteRT: {error}"]


@needs_tools
def test_a_failed_child_shows_its_error_without_the_chatter(run_copy, tmp_path):
    from mnistlab.export import write_exports

    with pytest.raises(ExportError) as err:
        write_exports(tmp_path / "no-run", {"onnx": tmp_path / "m.onnx"})
    text = str(err.value)
    assert "Error: run directory not found" in text
    assert "oneDNN" not in text and "absl::InitializeLog" not in text


def test_export_json_merges_and_survives_corruption(tmp_path):
    record_exports(tmp_path, {"onnx": {"ok": True}})
    record_exports(tmp_path, {"litert": {"ok": False}})
    assert set(json.loads((tmp_path / "export.json").read_text())["formats"]) == {"onnx", "litert"}
    (tmp_path / "export.json").write_text("{not json")
    record_exports(tmp_path, {"savedmodel": {"ok": True}})
    assert set(json.loads((tmp_path / "export.json").read_text())["formats"]) == {"savedmodel"}


def test_unknown_format_is_a_clear_error(run_copy):
    with pytest.raises(ConfigError, match="unknown export format 'torchscript'.*onnx, litert, savedmodel"):
        export_run(run_copy, ["onnx", "torchscript"])
    res = CliRunner().invoke(cli, ["export", str(run_copy), "--format", "pb"])
    assert res.exit_code == 1 and "Error: unknown export format 'pb'" in res.output
    assert not (run_copy / "export.json").exists() or "pb" not in (run_copy / "export.json").read_text()


def test_out_with_several_formats_is_refused(run_copy, tmp_path):
    with pytest.raises(ConfigError, match="one format at a time"):
        export_run(run_copy, ["onnx", "litert"], out=tmp_path / "m")


def test_incomplete_run_is_refused(run_copy, tmp_path):
    half = tmp_path / "half"
    shutil.copytree(run_copy, half)
    manifest = json.loads((half / "manifest.json").read_text())
    (half / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    with pytest.raises(RunError, match="not complete"):
        export_run(half, "onnx")
    with pytest.raises(RunError, match="not complete"):  # also when handed an open Run
        export_run(load_run(half, require_complete=False), "onnx")
    res = CliRunner().invoke(cli, ["export", str(half), "--format", "onnx"])
    assert res.exit_code == 1 and "not complete" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "nothing"), "--format", "onnx"])
    assert res.exit_code == 1 and "run directory not found" in res.output
