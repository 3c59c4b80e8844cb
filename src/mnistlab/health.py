"""Did a run learn anything? A run can finish every epoch and still be useless.

``learning_rate=10`` keeps the loss flat and the accuracy at chance, yet nothing fails. After
``MIN_EPOCHS`` epochs, a best validation accuracy no better than always answering the most common
validation class (plus ``MARGIN``) means the model did not learn. The run is kept; the verdict is
recorded in manifest.json and metrics.json (``learning``) and said by the CLI and the report.
"""

from __future__ import annotations

import numpy as np

MIN_EPOCHS = 3
MARGIN = 0.01


def check_learning(history: list[dict], val_labels: np.ndarray, num_classes: int,
                   learning_rate: float) -> dict:
    """Judge a finished run from its history.

    Args:
        history: rows with ``val_accuracy`` (history.csv), one per epoch.
        val_labels: int ``(N,)`` validation labels.
        num_classes: number of classes.
        learning_rate: the configured rate, named in the advice.

    Returns:
        ``{"learned": bool | None, "best_val_accuracy", "majority_share", "epochs", "message"}``;
        ``learned`` is ``None`` when there are fewer than ``MIN_EPOCHS`` epochs to judge.
    """
    labels = np.asarray(val_labels, dtype=np.int64)
    majority = float(np.bincount(labels, minlength=num_classes).max() / max(len(labels), 1))
    best = max((float(r["val_accuracy"]) for r in history), default=0.0)
    out = {"learned": None, "best_val_accuracy": best, "majority_share": majority,
           "epochs": len(history), "message": None}
    if len(history) < MIN_EPOCHS:
        return out
    out["learned"] = best > majority + MARGIN
    if not out["learned"]:
        out["message"] = (
            f"the model did not learn: after {len(history)} epochs its best validation accuracy "
            f"({best:.4f}) is no better than always answering the most common class "
            f"({majority:.4f}). The run is kept, but its model is no use; check "
            f"train.learning_rate (now {learning_rate}), the optimizer and the data"
        )
    return out
