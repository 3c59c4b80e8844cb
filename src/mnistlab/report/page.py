"""``report.html``: what each section of the page shows, gathered from a run, then rendered.

Each ``*_section`` function returns the plain values one template in ``templates/sections``
prints; formatting of numbers happens here, escaping happens in the template environment.
"""

from __future__ import annotations

import json
import shlex

from mnistlab.report.kit import duration, num, render
from mnistlab.report.parity import TUTORIAL, parity_verdict, recipe_differences


def render_report(run, layers: list[dict], pngs: dict[str, bytes], notes: dict[str, str]) -> str:
    """The text of ``report.html``.

    Args:
        run: a ``mnistlab.runs.Run``.
        layers: the model's rows from ``mnistlab.diagram.layer_rows``.
        pngs: PNG bytes by figure name; a missing figure leaves its place empty.
        notes: a sentence per figure name (``model``: how it was drawn, ``weights``: why not).
    """
    params = sum(r["params"] for r in layers)
    history = run.history
    return render(
        "report.html.j2",
        run_name=run.path.name,
        status=str(run.manifest.get("status", "unknown")),
        learning=(run.manifest.get("learning") or {}).get("message"),  # mnistlab.health
        pngs=pngs,
        notes=notes,
        summary=summary_section(run),
        parity=parity_section(run, params),
        data=data_section(run),
        model=model_section(layers, params, notes.get("model", "")),
        best=min(history, key=lambda r: r["val_loss"]) if history else None,
        metrics=metrics_section(run),
        exports=exports_section(run),
        provenance=provenance_section(run),
    )


def _dataset(run) -> dict:
    return run.manifest.get("dataset", {})


def _class_names(run) -> list:
    return run.metrics.get("class_names") or _dataset(run).get("class_names", [])


def summary_section(run) -> list[tuple[str, object]]:
    """``(name, value)`` rows: dataset, seed, epochs, optimizer, timing, test results."""
    m, met, cfg, t = run.manifest, run.metrics, run.config, run.config.train
    return [
        ("dataset", _dataset(run).get("name", "?")),
        ("preset", m.get("preset", cfg.preset)),
        ("seed", m.get("seed", cfg.seed)),
        ("epochs", f"{m.get('epochs_done', len(run.history))} of {t.epochs}"),
        ("optimizer", f"{t.optimizer}, learning rate {t.learning_rate}, batch {t.batch_size}"),
        ("time taken", duration(m.get("duration_s"))),
        ("status", str(m.get("status", "unknown"))),
        ("started", m.get("started", "-")),
        ("finished", m.get("finished", "-")),
        ("test accuracy", num(met.get("test_accuracy"))),
        ("test loss", num(met.get("test_loss"))),
    ]


def parity_section(run, params: int) -> dict:
    """The run next to the tutorial's numbers (``rows``) and a verdict that fits the dataset."""
    acc, loss = run.metrics.get("test_accuracy"), run.metrics.get("test_loss")
    name = _dataset(run).get("name")
    verdict = parity_verdict(
        "custom" if run.config.data.path or not name else name,
        float(acc or 0.0),
        params,
        recipe_differences(run.config),
    )
    rows = [
        ["test accuracy", num(TUTORIAL["test_accuracy"]), num(acc)],
        ["test loss", num(TUTORIAL["test_loss"]), num(loss)],
        ["parameters", f"{TUTORIAL['params']:,}", f"{params:,}"],
        ["dataset", "mnist", name or "?"],
    ]
    return {"rows": rows, "verdict": verdict}


def data_section(run) -> dict:
    """The array shapes of each split, the class names, the source and the split settings."""
    ds = _dataset(run)
    names = _class_names(run)
    h, w = ds.get("image_shape", ["?", "?"])
    c = ds.get("num_classes", len(names))
    rows = [
        [part, f"({ds.get(n, '?')}, {h}, {w})", f"({ds.get(n, '?')}, {c})"]
        for part, n in (
            ("x_train / y_train", "n_train"),
            ("x_val / y_val", "n_val"),
            ("x_test / y_test", "n_test"),
        )
    ]
    return {
        "rows": rows,
        "num_classes": c,
        "class_names": [str(n) for n in names],
        "source": ds.get("source", "-"),
        "val_fraction": run.config.data.val_fraction,
        "seed": run.config.seed,
        "notes": ds.get("notes") or "",
        "augment": _augment_text(run.config.augment),
    }


def _augment_text(aug) -> str:
    """E.g. "shifts up to 10 % of the size, rotations up to 10°, zoom ±10 %, left-right flips"."""
    parts = []
    if aug.shift:
        parts.append(f"shifts up to {aug.shift:.0%} of the size")
    if aug.rotation:
        parts.append(f"rotations up to {aug.rotation:g}°")
    if aug.zoom:
        parts.append(f"zoom ±{aug.zoom:.0%}")
    if aug.flip:
        parts.append("left-right flips of half the images")
    if aug.erase:
        parts.append(f"a random rectangle blanked in {aug.erase:.0%} of the images")
    return ", ".join(parts)


def model_section(layers: list[dict], params: int, diagram_note: str) -> dict:
    """One row per layer plus a total, and how the diagram was drawn."""
    rows = [
        [
            r["name"],
            r["type"] + (f" ({r['activation']})" if r["activation"] else ""),
            r["output_shape"],
            f"{r['params']:,}",
        ]
        for r in layers
    ]
    rows.append(["total", "", "", f"{params:,}"])
    return {"rows": rows, "diagram_note": diagram_note}


def metrics_section(run) -> dict:
    """Test accuracy and loss, and the classification report: one row per class plus averages."""
    met = run.metrics
    names = _class_names(run)

    def row(label, r):
        return [label, num(r["precision"]), num(r["recall"]), num(r["f1"]), r["support"]]

    rows = [
        row(names[int(i)] if int(i) < len(names) else i, r)
        for i, r in met.get("per_class", {}).items()
    ]
    rows += [row(k.replace("_", " "), met[k]) for k in ("macro_avg", "weighted_avg") if met.get(k)]
    return {
        "accuracy": met.get("test_accuracy"),
        "loss": met.get("test_loss"),
        "n_test": met.get("n_test", "?"),
        "rows": rows,
    }


def exports_section(run) -> dict | None:
    """The checks of ``export.json`` (``rows``, or ``error`` if unreadable); None if never exported."""
    path = run.file("export.json")
    if not path.exists():
        return None
    try:
        formats = json.loads(path.read_text(encoding="utf-8")).get("formats", {})
        rows = [
            [
                name,
                f.get("path", "-"),
                num(f.get("max_abs_diff"), ".2e"),
                num(f.get("label_agreement"), ".4f"),
                "yes" if f.get("ok") else "NO",
            ]
            for name, f in formats.items()
        ]
    except (ValueError, AttributeError):
        return {"error": "export.json is unreadable.", "rows": []}
    return {"error": "", "rows": rows}


def provenance_section(run) -> dict:
    """Versions and platform (``rows``), the command line, and the sha256 of each file."""
    m = run.manifest
    versions = {"mnistlab": m.get("mnistlab_version", "-"), **(m.get("versions") or {})}
    # One row per fact: the manifest records mnistlab's version twice (on its own and among the
    # versions).
    rows = [
        ("run directory", run.path.name),
        *versions.items(),
        ("backend", m.get("backend", "-")),
        ("platform", m.get("platform", "-")),
    ]
    files = [[f"dataset: {k}", v] for k, v in (_dataset(run).get("sha256") or {}).items()]
    files += [[k, v] for k, v in (m.get("files") or {}).items()]
    return {"rows": rows, "command": shlex.join(map(str, m.get("command") or [])), "files": files}
