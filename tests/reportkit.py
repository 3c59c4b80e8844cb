"""Helpers for the plot, report and compare tests: PNG checks and a hand-written run directory.

``write_run`` follows the run-directory contract (RUNDIR.md) field by field with tiny arrays and a
real (untrained, seeded) Keras model, so the report code is tested against the contract itself and
not against whatever the trainer happens to write.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(data: bytes, min_size=(200, 150)) -> Image.Image:
    """Assert ``data`` is a decodable, non-blank PNG of at least ``min_size`` pixels."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG file (bad signature)"
    image = Image.open(io.BytesIO(data), formats=["PNG"])
    image.load()
    w, h = image.size
    assert w >= min_size[0] and h >= min_size[1], f"image too small: {w}x{h}"
    pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 5, "image is blank (a single colour)"
    return image


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_model(image_shape, num_classes, hidden=(16, 8), seed=0):
    """A built, compiled tutorial-shaped MLP (flatten/dense1.../output) with seeded weights."""
    from mnistlab.config import ModelConfig, TrainConfig
    from mnistlab.model import build_model, compile_model

    model = build_model(ModelConfig(hidden=list(hidden)), tuple(image_shape), num_classes, seed)
    return compile_model(model, TrainConfig())


def write_run(
    root: Path,
    *,
    name="20250101-000000-tutorial-digits-seed111",
    image_shape=(8, 8),
    class_names=tuple(str(i) for i in range(10)),
    dataset="digits",
    epochs=3,
    n_test=60,
    seed=111,
    command=("mnistlab", "train", "--dataset", "digits"),
    config_extra: str = "",
    all_correct=False,
    status="complete",
) -> Path:
    """Write a complete run directory by hand, following RUNDIR.md exactly (tiny arrays)."""
    run = Path(root) / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(
        f'preset = "tutorial"\nseed = {seed}\n{config_extra}\n'
        f'[data]\ndataset = "{dataset}"\nval_fraction = 0.3\n\n'
        f"[model]\nhidden = [16, 8]\n\n[train]\nepochs = {epochs}\nbatch_size = 16\n",
        encoding="utf-8",
    )
    split = np.arange(100)
    np.savez(run / "split.npz", train_idx=split[:70], val_idx=split[70:])
    labels, predicted = _write_arrays(
        run, np.random.default_rng(seed), image_shape, len(class_names), n_test, all_correct
    )
    _write_history(run, epochs)
    _write_metrics(run, labels, predicted, class_names)

    model = tiny_model(image_shape, len(class_names), seed=seed)
    model.save(run / "model.keras")
    model.save(run / "model.h5")
    (run / "summary.txt").write_text("Model: mnist_mlp\n")
    (run / "architecture.json").write_text(model.to_json())
    (run / "preprocess.json").write_text(json.dumps({"image_size": list(image_shape)}))

    manifest = {
        "mnistlab_version": "0.1.0",
        "status": status,
        "command": list(command),
        "seed": seed,
        "preset": "tutorial",
        "dataset": {
            "name": dataset,
            "source": "test fixture",
            "sha256": {"data.npz": "ab" * 32},
            "image_shape": list(image_shape),
            "num_classes": len(class_names),
            "class_names": list(class_names),
            "n_train": 70,
            "n_val": 30,
            "n_test": n_test,
            "notes": "",
        },
        "split_file": "split.npz",
        "versions": {"python": "3.11", "keras": "3", "numpy": "2"},
        "backend": "jax",
        "platform": "test",
        "started": "2025-01-01T00:00:00",
        "finished": "2025-01-01T00:00:05",
        "duration_s": 5.0,
        "epochs_done": epochs,
        "params": int(model.count_params()),
        "files": {"model.keras": _sha(run / "model.keras"), "model.h5": _sha(run / "model.h5")},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def _write_arrays(run: Path, rng, image_shape, c: int, n_test: int, all_correct: bool):
    """Write samples.npz and predictions.npz; return the test labels and the predicted labels."""
    h, w = image_shape
    # Images with structure (a bright bar placed by the label) so tiles are not blank.
    labels = (np.arange(n_test) % c).astype(np.int64)
    images = rng.integers(0, 60, size=(n_test, h, w), dtype=np.uint8)
    for k, y in enumerate(labels):
        r = int(y) % (h - 2)
        images[k, r : r + 3, 1 : w - 1] = 255
    np.savez(
        run / "samples.npz",
        images=images[:5],
        labels=labels[:5],
        indices=np.array([3, 14, 15, 92, 65], dtype=np.int64),
    )

    probs = rng.dirichlet(np.ones(c), size=n_test).astype(np.float32)
    if all_correct:
        probs[np.arange(n_test), labels] += 2.0
        probs /= probs.sum(axis=1, keepdims=True)
    else:
        # Two thirds right, the rest wrong with varied confidence.
        right = np.arange(n_test) % 3 != 0
        probs[right, labels[right]] += 1.5
        probs /= probs.sum(axis=1, keepdims=True)
    predicted = probs.argmax(axis=1).astype(np.int64)
    np.savez(
        run / "predictions.npz",
        probabilities=probs,
        labels=labels,
        predicted=predicted,
        images=images,
    )
    return labels, predicted


def _write_history(run: Path, epochs: int) -> None:
    with open(run / "history.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"])
        for e in range(1, epochs + 1):
            wr.writerow([e, 2.0 / e, 1 - 0.6 / e, 2.2 / e, 1 - 0.7 / e, 0.5])


def _write_metrics(run: Path, labels, predicted, class_names) -> None:
    """Write metrics.json (computed from the labels) and classification_report.txt."""
    c, n_test = len(class_names), len(labels)
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (labels, predicted), 1)
    per_class = {}
    for i in range(c):
        tp = int(cm[i, i])
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i].sum() if cm[i].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[str(i)] = {
            "precision": prec,
            "recall": rec,
            "f1": f1,
            "support": int(cm[i].sum()),
        }
    acc = float((predicted == labels).mean())
    avg = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": n_test}
    metrics = {
        "test_loss": 0.9,
        "test_accuracy": acc,
        "n_test": n_test,
        "num_classes": c,
        "class_names": list(class_names),
        "per_class": per_class,
        "macro_avg": avg,
        "weighted_avg": avg,
        "confusion_matrix": cm.tolist(),
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "classification_report.txt").write_text("report\n")
