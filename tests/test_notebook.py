"""The tutorial notebook runs top to bottom in a real Jupyter kernel (nbclient + ipykernel)."""

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from mnistlab.notebook import NotebookProgress, run_html

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def kernel_home(tmp_path, monkeypatch):
    """A kernelspec for this very Python, so the notebook runs against the code under test."""
    spec = tmp_path / "jupyter" / "kernels" / "mnistlab-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "mnistlab test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "mnistlab-test"


def test_tutorial_notebook_executes_with_figures_and_summary(tmp_path, kernel_home):
    nb = nbformat.read(ROOT / "examples" / "tutorial.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    params[0].source = f'DATASET = "digits"\nEPOCHS = 2\nOUT = {str(tmp_path / "runs")!r}'
    NotebookClient(nb, kernel_name=kernel_home, timeout=600,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 4  # samples, curves, confusion matrix, prediction
    htmls = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("mnistlab run" in h and "test accuracy" in h for h in htmls)
    bars = [o for o in outputs if o.output_type in ("display_data", "update_display_data")
            and "mnistlab-progress" in o.get("data", {}).get("text/html", "")]
    assert bars and "epoch 2/2" in bars[-1]["data"]["text/html"]
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_progress_bar_and_run_summary_escape_and_count():
    text = NotebookProgress.render(3, 10, {"loss": 0.5, "accuracy": 0.9, "val_loss": 0.6,
                                           "val_accuracy": 0.8}, elapsed=6.0)
    assert 'value="3" max="10"' in text and "ETA 14.0s" in text

    class FakeRun:  # the summary reads only these attributes of a Run
        path = Path("/runs/<script>x")
        manifest = {"status": "complete", "dataset": {"name": "<b>"}, "epochs_done": 2,
                    "epochs_planned": 2}
        metrics = {"test_accuracy": 0.5, "test_loss": 1.0}

        @property
        def config(self):
            raise ValueError("no config")

    html = run_html(FakeRun())
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html
    assert "0.5000" in html


def test_steps_outside_a_notebook_print_nothing(capsys):
    bar = NotebookProgress()
    bar.step(1, 3, 0, 10, None)
    bar.step(1, 3, 5, 10, {"loss": 0.5, "accuracy": 0.75})
    assert capsys.readouterr().out == ""  # the epoch line is what a script sees
    bar(1, 3, {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.7})
    assert capsys.readouterr().out == "epoch 1/3 - loss 0.5000 - val_accuracy 0.7000\n"
