"""``mnistlab predict``: test images by index, or a person's own image files."""

from __future__ import annotations

import csv
import io
import json
import sys

import click


def _table(results) -> str:
    lines = [f"{'file':<40} {'label':>5} {'conf':>6}  top-3 / status"]
    for r in results:
        d = r.as_dict()
        if d["status"] == "error":
            lines.append(f"{d['file']:<40} {'-':>5} {'-':>6}  ERROR: {d['error']}")
        elif d["status"] != "ok":
            lines.append(f"{d['file']:<40} {'-':>5} {'-':>6}  {d['status']}: {d['message']}")
        else:
            top = ", ".join(f"{t['name']} {t['probability']:.2f}" for t in d["top"])
            lines.append(f"{d['file']:<40} {d['name']:>5} {d['confidence']:6.3f}  {top}")
    return "\n".join(lines)


def _csv(results) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "status", "label", "name", "confidence", "top3", "message"])
    for r in results:
        d = r.as_dict()
        top = ";".join(f"{t['name']}:{t['probability']:.4f}" for t in d.get("top", []))
        w.writerow([d["file"], d["status"], d.get("label", ""), d.get("name", ""),
                    d.get("confidence", ""), top, d.get("message") or d.get("error", "")])
    return buf.getvalue()


@click.command("predict")
@click.argument("run", type=click.Path())
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--index", "indices", type=int, multiple=True, help="A test image index (repeatable).")
@click.option("--model", "model_path", type=click.Path(), help="Use this .keras/.h5 file; RUN is then an image too.")
@click.option("--json", "fmt", flag_value="json", help="Print JSON.")
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")
@click.option("--show", "show_dir", type=click.Path(), help="Write each input next to the 28x28 the model saw.")
def predict_cmd(run, images, indices, model_path, fmt, show_dir):
    """Predict test images of RUN (--index N) or your own IMAGE files and folders.

    Photos of dark ink on paper are fine: they are inverted, cleaned, cropped, scaled to a
    20-pixel box and centred by mass like MNIST. Exit code 1 if any file could not be read.
    """
    from mnistlab.photos import plan_prediction, predict_files

    plan = plan_prediction((run, *images), indices=indices, model_path=model_path)
    names = plan.predictor.class_names
    for i, true, image in plan.tests:
        p = plan.predictor.predict(image, preprocess=False)
        click.echo(f"test image {i}: probabilities [{', '.join(f'{q:.4f}' for q in p.probabilities)}]")
        click.echo(f"  predicted {p.name} (confidence {p.confidence:.4f}), true {names[true]}")
    if not plan.files:
        return
    results = predict_files(plan.predictor, plan.files, show_dir=show_dir)
    click.echo(_FORMATS[fmt](results), nl=fmt != "csv")
    if any(r.error for r in results):
        sys.exit(1)


def _json(results) -> str:
    return json.dumps([r.as_dict() for r in results], indent=2)


_FORMATS = {None: _table, "json": _json, "csv": _csv}

COMMANDS = [predict_cmd]
