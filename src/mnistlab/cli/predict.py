"""``mnistlab predict``: test images by index, or a person's own image files."""

from __future__ import annotations

import csv
import io
import json
import sys

import click


def _table(results) -> str:
    rows = [("file", "label", "conf", "top-3 / status"), *(_cells(r.as_dict()) for r in results)]
    wide = [max(len(row[i]) for row in rows) for i in range(3)]  # as wide as the longest cell
    return "\n".join(f"{f:<{wide[0]}}  {lbl:<{wide[1]}}  {conf:>{wide[2]}}  {rest}".rstrip()
                     for f, lbl, conf, rest in rows)


def _cells(d: dict) -> tuple[str, str, str, str]:
    if d["status"] == "error":
        return d["file"], "-", "-", f"ERROR: {d['error']}"
    if d["status"] != "ok":
        return d["file"], "-", "-", f"{d['status']}: {d['message']}"
    top = ", ".join(f"{t['name']} {t['probability']:.2f}" for t in d["top"])
    return d["file"], d["name"], f"{d['confidence']:.3f}", top


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
    files = _files_with_notes(plan, None if model_path else run)
    results = predict_files(plan.predictor, files, show_dir=show_dir)
    click.echo(_FORMATS[fmt](results), nl=fmt != "csv")
    if any(r.error for r in results):
        sys.exit(1)


def _files_with_notes(plan, run) -> list:
    """The image files to predict; what a user should know about them goes to stderr, once."""
    from mnistlab.photos import classes_note, find_images, skipped_text, trained_on

    files, skipped = find_images(plan.files)
    dataset = trained_on(run) if run is not None else None
    for note in (classes_note(plan.predictor.class_names, dataset), skipped_text(skipped)):
        if note:
            click.echo(note, err=True)
    return files


def _json(results) -> str:
    return json.dumps([r.as_dict() for r in results], indent=2)


_FORMATS = {None: _table, "json": _json, "csv": _csv}

COMMANDS = [predict_cmd]
