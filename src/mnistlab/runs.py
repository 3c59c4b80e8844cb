"""Run directories: create them exclusively, record what happened, read them back.

The layout is documented in the README ("The run directory"). A run directory alone is enough to
evaluate, report, predict, serve, export and rerun.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnistlab.errors import RunError
from mnistlab.files import write_json

if TYPE_CHECKING:
    from mnistlab.config import Config

MANIFEST = "manifest.json"
MODEL_FILE = "model.keras"
PREDICTOR_FILE = "predictor.npz"  # the numpy predictor, when training could verify one


def utc_now() -> str:
    """The current UTC time as run files record it, e.g. ``2026-11-30T03:26:26+00:00``."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_") or "data"


def create_run_dir(root: str | Path, preset: str, dataset: str, seed: int,
                   now: dt.datetime | None = None) -> Path:
    """Create a new, empty run directory under ``root`` and return it.

    The name is ``<YYYYmmdd-HHMMSS>-<preset>-<dataset>-seed<N>``; if another process created that
    name first (same second), ``-2``, ``-3``... is appended. ``os.mkdir`` is atomic, so two
    processes never share a directory. ``now`` fixes the time stamp (default: the local time).
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise unusable_out(root, e) from None
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    try:
        return fresh_folder(root, f"{stamp}-{_slug(preset)}-{_slug(dataset)}-seed{seed}")
    except OSError as e:
        raise unusable_out(root, e) from None


def fresh_folder(root: Path, base: str) -> Path:
    """Create ``root/base`` (or ``base-2``, ``base-3``... if taken) exclusively and return it.

    ``os.mkdir`` is atomic, so two processes never get the same folder.

    Raises:
        RunError: 10,000 names are taken. OSError: ``root`` cannot hold a new folder.
    """
    for k in range(1, 10_000):
        path = root / (base if k == 1 else f"{base}-{k}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise RunError(f"could not create a new folder {base} under {root}; clean it up and retry")


def unusable_out(root: Path, e: OSError) -> RunError:
    """Explain why a runs folder (``--out``) cannot hold a new run directory, and the fix."""
    from mnistlab.errors import shorten

    where = shorten(str(root))
    if isinstance(e, FileExistsError) or (root.exists() and not root.is_dir()):
        why = "it is an existing file, not a folder"
    elif isinstance(e, NotADirectoryError):
        why = "a part of the path is a file, not a folder"
    elif isinstance(e, FileNotFoundError) and root.parent.is_dir():
        why = (f"{shorten(str(root.parent))} does not allow new folders (a virtual filesystem "
               "such as /proc?)")
    else:
        why = e.strerror or type(e).__name__
    return RunError(f"cannot create a run directory under --out {where}: {why}. Pass --out a folder "
                    "you can write to (it is created if missing)")


@dataclass
class Run:
    """A run directory and what it records."""

    path: Path
    manifest: dict

    @property
    def config(self) -> Config:
        from mnistlab.config import load_config  # pydantic models: not needed to predict

        return load_config(file=self.path / "config.toml")

    @property
    def status(self) -> str:
        """The recorded status, except that ``running`` with no live trainer is ``interrupted``."""
        from mnistlab.runlock import live_status

        return live_status(self.path, self.manifest.get("status", "unknown"), self.manifest.get("pid"))

    @property
    def is_complete(self) -> bool:
        return self.status == "complete"

    @property
    def metrics(self) -> dict:
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def history(self) -> list[dict]:
        return read_history(self.path / "history.csv")

    @property
    def class_names(self) -> list[str] | None:
        """The class names recorded with the dataset, index = label (None if not recorded)."""
        return (self.manifest.get("dataset") or {}).get("class_names")

    @property
    def preprocess_params(self):
        """The run's ``PreprocessParams`` from ``preprocess.json`` (None if the run has none).

        Raises:
            ConfigError: the file is not valid preprocessing parameters.
        """
        from mnistlab.preprocess import PreprocessParams

        path = self.path / "preprocess.json"
        return PreprocessParams.from_json(path.read_text()) if path.is_file() else None

    def file(self, name: str) -> Path:
        return self.path / name

    def _repr_html_(self) -> str:  # Jupyter shows a run as a compact summary
        from mnistlab.notebook import run_html

        return run_html(self)

    def load_model(self, name: str = MODEL_FILE):
        """Load the run's model after checking its sha256 against the manifest.

        Raises:
            ModelError: the file is missing, modified, truncated or unsafe.
        """
        from mnistlab.modelfile import load_model_file

        expected = self.manifest.get("files", {}).get(name)
        return load_model_file(self.path / name, expected_sha256=expected)

    def check_model(self, name: str = MODEL_FILE) -> None:
        """``load_model``'s checks (container, sha256, layers) without loading it or Keras.

        Raises:
            ModelError: the file is missing, modified, truncated or unsafe.
        """
        from mnistlab.modelfile import check_model_file

        check_model_file(self.path / name, self.manifest.get("files", {}).get(name))

    def check_files(self, *names: str) -> None:
        """Raise ``RunError`` naming every file the manifest lists (or ``names`` asks for) that
        is not in the run directory. Cheap (no file is read), so commands call it first.
        """
        wanted = [*self.manifest.get("files", {}), *names]
        missing = [n for n in dict.fromkeys(wanted) if not (self.path / n).is_file()]
        if missing:
            raise RunError(
                f"run {self.path} lacks {', '.join(missing)}, which it should hold; the directory "
                "was changed after training. Restore the files or train again"
            )

    def update(self, durable: bool = True, **fields) -> None:
        """Merge ``fields`` into the manifest and rewrite it atomically."""
        self.manifest.update(fields)
        write_json(self.path / MANIFEST, self.manifest, durable=durable)


def read_manifest(path: str | Path) -> dict:
    """Read ``manifest.json`` of a run directory.

    Raises:
        RunError: the directory or its manifest is missing or unreadable.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run directory not found: {path}. List runs with `mnistlab runs`")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(
            f"{path} is not a run directory (no {MANIFEST}). Pass a directory made by `mnistlab train`"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path / MANIFEST} is corrupt ({e}); the run cannot be used") from None
    if not isinstance(manifest, dict):
        raise RunError(
            f"{path / MANIFEST} is corrupt (expected a JSON object, received "
            f"{type(manifest).__name__}); the run cannot be used"
        )
    return manifest


def load_run(path: str | Path, require_complete: bool = True) -> Run:
    """Open a run directory.

    Args:
        path: the run directory.
        require_complete: refuse runs that did not finish.

    Raises:
        RunError: missing, not a run, or incomplete (with the command that resumes it).
    """
    run = Run(Path(path), read_manifest(path))
    if require_complete:
        check_complete(run)
    return run


def as_run(run: Run | str | Path, require_complete: bool = True) -> Run:
    """Return ``run`` itself when it is a ``Run`` already, else open the directory it names.

    Library functions take either, so a command that opened a run passes it on and nothing reads
    the run directory twice.

    Raises:
        RunError: as ``load_run``.
    """
    if not isinstance(run, Run):
        return load_run(run, require_complete)
    if require_complete:
        check_complete(run)
    return run


def check_complete(run: Run) -> None:
    """Raise ``RunError`` (with the command that resumes it) unless ``run`` finished."""
    if not run.is_complete:
        raise RunError(
            f"run {run.path} is {run.status} (epoch {run.manifest.get('epochs_done', 0)} of "
            f"{run.manifest.get('epochs_planned', '?')}), not complete. Finish it with "
            f"`mnistlab train --resume {run.path}`"
        )


def list_runs(root: str | Path = "runs") -> list[Run]:
    """Return every run directory directly under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for p in sorted(root.iterdir()):
        if (p / MANIFEST).is_file():
            try:
                runs.append(Run(p, read_manifest(p)))
            except RunError:
                continue
    return runs


HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]


def read_history(path: str | Path) -> list[dict]:
    """Read ``history.csv`` into a list of dicts with float values (epoch as int)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in rows]


def history_csv(rows: list[dict]) -> str:
    """Format history rows as CSV text with the ``HISTORY_FIELDS`` header."""
    lines = [",".join(HISTORY_FIELDS)]
    for r in rows:
        lines.append(",".join(repr(r[k]) if k != "epoch" else str(r[k]) for k in HISTORY_FIELDS))
    return "\n".join(lines) + "\n"
