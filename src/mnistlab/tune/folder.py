"""The study folder ``runs/tune-<study>/``: what a study leaves on disk besides its database.

``trials.csv`` (one row per trial), ``best.toml`` (the best configuration, for
``mnistlab train --config``), ``space.toml`` (the search space used), ``tune.json`` (a summary
that ``mnistlab runs`` and ``mnistlab tune --report`` read) and ``tune.html``. Every file is
written atomically, so an interrupted command leaves the previous version, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from mnistlab.config import Config, to_toml
from mnistlab.files import write_json, write_text
from mnistlab.tune.errors import TuneError
from mnistlab.tune.objective import CONFIG_ATTR, REASON_ATTR

PREFIX = "tune-"
SUMMARY = "tune.json"


def study_folder(out: str | Path, study: str) -> Path:
    """``<out>/tune-<study>``."""
    return Path(out) / f"{PREFIX}{study}"


def trials_csv(trials) -> str:
    """CSV text: number, state, value, epochs, seconds, start, every parameter, reason."""
    names = sorted({name for t in trials for name in t.params})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["number", "state", "val_accuracy", "epochs", "seconds", "started", *names,
                     "reason"])
    for t in sorted(trials, key=lambda t: t.number):
        seconds = round(t.duration.total_seconds(), 3) if t.duration else ""
        started = t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else ""
        writer.writerow([t.number, t.state.name, "" if t.value is None else repr(t.value),
                         len(t.intermediate_values), seconds, started,
                         *(t.params.get(n, "") for n in names), t.user_attrs.get(REASON_ATTR, "")])
    return buf.getvalue()


def best_config(trial) -> Config:
    """The configuration a finished trial trained (recorded with it)."""
    return Config.model_validate(trial.user_attrs[CONFIG_ATTR])


def best_toml(trial, study: str) -> str:
    """``best.toml`` text: the best trial's full configuration with a comment saying whence."""
    head = (f"# Best trial of study {study!r}: trial {trial.number}, validation accuracy "
            f"{trial.value:.4f}.\n# Train it: mnistlab train --config best.toml\n")
    return head + to_toml(best_config(trial))


def write_files(folder: Path, study, space_text: str) -> None:
    """Write trials.csv, space.toml and (once a trial completed) best.toml."""
    trials = study.get_trials(deepcopy=False)
    write_text(folder / "trials.csv", trials_csv(trials))
    write_text(folder / "space.toml", space_text)
    try:
        best = study.best_trial
    except ValueError:  # no trial completed yet
        return
    write_text(folder / "best.toml", best_toml(best, study.study_name))


def read_summary(folder: str | Path) -> dict:
    """Read ``tune.json`` of a study folder.

    Raises:
        TuneError: the folder or its summary is missing or unreadable.
    """
    path = Path(folder) / SUMMARY
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TuneError(f"{folder} is not a study folder (no {SUMMARY}). Pass a runs/tune-NAME "
                        "folder made by `mnistlab tune`") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TuneError(f"{path} is unreadable ({e}); run `mnistlab tune` again to rewrite "
                        "it") from None
    if not isinstance(data, dict):
        raise TuneError(f"{path} is corrupt (expected a JSON object)")
    return data


@dataclass(frozen=True)
class Study:
    """A study folder as ``mnistlab tune`` left it: its path and ``tune.json`` summary. Jupyter
    shows it as a compact summary (``_repr_html_``)."""

    folder: Path
    summary: dict

    def _repr_html_(self) -> str:
        from mnistlab.notebook import study_html

        return study_html(self.folder, self.summary)


def load_study(folder: str | Path) -> Study:
    """Read a ``runs/tune-<study>`` folder.

    Raises:
        TuneError: the folder or its summary is missing or unreadable.
    """
    return Study(Path(folder), read_summary(folder))


def write_summary(folder: Path, summary: dict) -> None:
    write_json(folder / SUMMARY, summary)


def list_studies(root: str | Path = "runs") -> list[tuple[Path, dict]]:
    """Every study folder directly under ``root`` with its summary, by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.glob(f"{PREFIX}*")):
        if (p / SUMMARY).is_file():
            try:
                out.append((p, read_summary(p)))
            except TuneError:
                continue
    return out
