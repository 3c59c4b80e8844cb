"""Epoch-boundary checkpoints: everything needed to continue training exactly where it stopped.

One file, ``checkpoint.npz``, written atomically after every epoch: the model's variables (weights
and dropout seed-generator states), the optimizer's variables (iteration count, momenta), the number
of epochs done and the history so far. The per-epoch shuffling order is derived from
``(seed, epoch)``, so no other random state is needed to resume bit-identically.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from mnistlab.errors import RunError
from mnistlab.files import load_npz, save_npz

FILE = "checkpoint.npz"
HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def save_checkpoint(run_dir: Path, model, epochs_done: int, rows: list[dict]) -> None:
    """Write ``checkpoint.npz`` atomically.

    Args:
        run_dir: the run directory.
        model: the compiled Keras model (its optimizer is saved too).
        epochs_done: number of completed epochs.
        rows: history rows (dicts with ``HISTORY_KEYS``).
    """
    save_checkpoint_arrays(run_dir, [np.asarray(v.value) for v in model.variables],
                           [np.asarray(v.value) for v in model.optimizer.variables], epochs_done,
                           rows)


def save_checkpoint_arrays(run_dir: Path, model_values: list, optimizer_values: list,
                           epochs_done: int, rows: list[dict]) -> None:
    """``save_checkpoint`` from the values themselves, in the order of ``model.variables`` and
    ``model.optimizer.variables`` (for training that has no Keras model yet)."""
    arrays = {f"model_{i}": v for i, v in enumerate(model_values)}
    arrays.update({f"opt_{i}": v for i, v in enumerate(optimizer_values)})
    arrays["epochs_done"] = np.int64(epochs_done)
    arrays["history"] = np.array(
        [[r[k] for k in HISTORY_KEYS] for r in rows], dtype=np.float64
    ).reshape(len(rows), len(HISTORY_KEYS))
    # Uncompressed and not fsynced: rewritten every epoch, it must cost little (the rename keeps
    # it crash-safe).
    save_npz(Path(run_dir) / FILE, compress=False, durable=False, **arrays)


def load_checkpoint(run_dir: Path, model) -> tuple[int, list[dict]]:
    """Restore model and optimizer variables from ``checkpoint.npz``.

    Args:
        run_dir: the run directory.
        model: a compiled model built from the run's config (same architecture).

    Returns:
        ``(epochs_done, history_rows)``.

    Raises:
        RunError: no checkpoint, or one that does not fit the model.
    """
    path = Path(run_dir) / FILE
    if not path.is_file():
        raise RunError(
            f"{run_dir} has no {FILE}: it stopped before finishing its first epoch. "
            "Start a new run with `mnistlab train`"
        )
    try:
        data = load_npz(path)
        model.optimizer.build(model.trainable_variables)
        targets = [("model", v) for v in model.variables]
        targets += [("opt", v) for v in model.optimizer.variables]
        counters = {"model": 0, "opt": 0}
        for kind, var in targets:
            value = data[f"{kind}_{counters[kind]}"]
            counters[kind] += 1
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(f"shape {value.shape} != {tuple(var.shape)} for {var.path}")
            var.assign(value)
        epochs_done = int(data["epochs_done"])
        rows = [
            {k: (int(v) if k == "epoch" else float(v)) for k, v in zip(HISTORY_KEYS, r, strict=True)}
            for r in data["history"]
        ]
    # A damaged file (truncated copy, disk error) surfaces as any of these from numpy/zipfile/zlib.
    except (KeyError, ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile,
            zlib.error) as e:
        raise RunError(
            f"{path} does not fit this run's model or is damaged ({type(e).__name__}: {e}); "
            "it cannot be resumed. Start a new run"
        ) from None
    return epochs_done, rows
