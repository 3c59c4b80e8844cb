"""``mnistlab tune``: search hyper-parameters with Optuna, then retrain the best as a real run.

``tune(config, ...)`` creates (or continues) a study in a relational database, runs trials in one
or more worker processes until the study holds ``trials`` trials or ``timeout`` passes, writes the
study folder ``runs/tune-<study>/`` and retrains the best configuration with
``mnistlab.training.train`` (an ordinary run directory whose test accuracy is the only time the
test set is used).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnistlab.config import Config
from mnistlab.tune import folder as files
from mnistlab.tune.errors import TuneError
from mnistlab.tune.space import load_space
from mnistlab.tune.storage import check_url, default_url, opened, redact
from mnistlab.tune.worker import Job, Tickets, run_worker

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
Progress = Callable[[dict], None]


@dataclass
class TuneResult:
    """What a ``tune`` call did. ``summary`` is what ``tune.json`` holds."""

    folder: Path
    summary: dict
    interrupted: bool
    ran: int  # trials this call finished

    def _repr_html_(self) -> str:  # Jupyter shows the result as the study's summary
        return files.Study(self.folder, self.summary)._repr_html_()


def default_study_name(config: Config) -> str:
    """``<preset>-<dataset>``, e.g. ``tutorial-fashion_mnist``."""
    return f"{config.preset}-{'custom' if config.data.path else config.data.dataset}"


def threads_per_worker(workers: int) -> int:
    """Cores for each of ``workers`` processes: an equal share of this process's cores, at least
    one (more workers than cores would only take turns)."""
    from mnistlab.engine.blas import available_cores

    return max(1, available_cores() // workers)


def _attrs_for(base: Config, space_text: str) -> dict:
    return {"base_config": base.model_dump(mode="json"), "space": tomllib.loads(space_text)}


def prepare_study(url: str, name: str, base: Config, space_text: str) -> int:
    """Create the study, or check an existing one was made with the same settings.

    Returns:
        The number of trials the study already holds.

    Raises:
        TuneError: the study exists with another base configuration or search space.
        StorageError: the storage cannot be opened.
    """
    with opened(url) as storage:
        return _prepare(storage, url, name, _attrs_for(base, space_text))


def _prepare(storage, url: str, name: str, want: dict) -> int:
    import optuna

    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for key, value in want.items():
            study.set_user_attr(key, value)
        return 0
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    for _ in range(50):  # another machine may have created it a moment ago: wait for its attrs
        if all(k in study.user_attrs for k in want):
            break
        time.sleep(0.2)
    for key, label in (("base_config", "base configuration"), ("space", "search space")):
        if study.user_attrs.get(key) != want[key]:
            raise TuneError(
                f"study {name!r} in {redact(url)} was started with another {label}; continuing it "
                f"would mix two searches. Use the same --preset/--dataset/--space as before, or "
                f"start a new study with --study NEW_NAME"
            )
    return len(study.get_trials(deepcopy=False))


class _StopOnSignal:
    """First SIGINT/SIGTERM: stop after the current trial. Second: stop now (the trial in
    progress is recorded as failed). ``forward`` passes each signal on (to worker processes)."""

    def __init__(self, stop, forward: Callable[[], None] | None = None):
        self.stop, self.forward, self.count, self.old = stop, forward, 0, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.count += 1
        self.stop.set()
        if self.forward:
            self.forward()
        elif self.count > 1:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, old in self.old.items():
            signal.signal(sig, old)
        return False


def _run_here(job: Job, tickets: Tickets, stop, progress: Progress) -> bool:
    """One worker in this process. Returns True if a signal stopped it."""
    with _StopOnSignal(stop) as guard:
        try:
            run_worker(job, 0, tickets, stop, progress)
        except KeyboardInterrupt:
            return True
    return guard.count > 0


def _run_processes(job: Job, workers: int, tickets: Tickets, stop, ctx, progress: Progress
                   ) -> bool:
    """``workers`` spawned processes; their trial events are passed to ``progress`` here.

    Returns True if a signal stopped them. Raises the first worker's error, if any.
    """
    import queue

    from mnistlab.tune.worker import process_main

    events = ctx.Queue()
    procs = [ctx.Process(target=process_main, args=(job, i, tickets, stop, events),
                         name=f"mnistlab-tune-{i}") for i in range(workers)]

    def forward():
        for p in procs:
            if p.pid and p.is_alive():
                p.terminate()  # SIGTERM: the worker's own handler decides (see process_main)

    errors, done = [], set()
    with _StopOnSignal(stop, forward) as guard:
        for p in procs:
            p.start()
        while len(done) < workers:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break  # a worker died without saying goodbye (killed)
                continue
            if event["kind"] == "trial":
                progress(event)
            elif event["kind"] == "error":
                errors.append(event["message"])
            elif event["kind"] == "done":
                done.add(event["worker"])
        for p in procs:
            p.join()
    if errors:
        raise TuneError(errors[0])
    return guard.count > 0


def _retrain(study, folder: Path, out, dataset, command, progress: Progress) -> dict:
    """Train the best trial's configuration as an ordinary run (once per best trial)."""
    from mnistlab.runs import list_runs, load_run
    from mnistlab.training import train

    best = study.best_trial
    old = _read_old_summary(folder).get("retrained") or {}
    if old.get("trial") == best.number and old.get("run"):
        path = (folder / old["run"]).resolve()
        if any(r.path.resolve() == path and r.is_complete for r in list_runs(path.parent)):
            return old
    progress({"kind": "retrain", "number": best.number, "value": best.value})
    run = train(files.best_config(best), dataset=dataset, out=out, command=command, report=True)
    run = load_run(run.path)
    last_val = run.history[-1]["val_accuracy"] if run.history else None
    return {
        "trial": best.number, "run": str(_relative(run.path, folder)),
        "test_accuracy": run.metrics["test_accuracy"], "val_accuracy": last_val,
        "reproduced": last_val == best.value,
    }


def _relative(path: Path, start: Path) -> Path:
    import os

    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve()))


def _read_old_summary(folder: Path) -> dict:
    try:
        return files.read_summary(folder)
    except TuneError:
        return {}


def summarize(study, url: str, workers: int, threads: int, retrained: dict | None) -> dict:
    """The ``tune.json`` summary of a study."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    try:
        best = study.best_trial
        best_info = {"number": best.number, "val_accuracy": best.value, "params": best.params}
    except ValueError:
        best_info = None
    base = study.user_attrs.get("base_config", {})
    return {
        "study": study.study_name, "storage": redact(url),
        "dataset": base.get("data", {}).get("path") or base.get("data", {}).get("dataset"),
        "preset": base.get("preset"), "trials": counts, "best": best_info,
        "retrained": retrained, "workers": workers, "threads_per_worker": threads,
        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def tune(
    config: Config,
    *,
    space: str | Path | None = None,
    trials: int | None = 60,
    timeout: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    study: str | None = None,
    out: str | Path = "runs",
    dataset=None,
    command: list[str] | None = None,
    progress: Progress | None = None,
    retrain: bool = True,
) -> TuneResult:
    """Search the space around ``config`` and retrain the best configuration.

    Args:
        config: the base configuration (preset, data, seed); trials vary the space's fields.
        space: a search-space TOML file (``mnistlab.tune.space``); None: the default MLP space.
        trials: stop when the study holds this many trials (continuing counts earlier ones).
        timeout: start no new trial after this many seconds.
        workers: worker processes on this machine (1: this process).
        storage: database URL (default ``sqlite:///<out>/tune-<study>/study.db``).
        study: study name (default ``<preset>-<dataset>``).
        out: the runs folder: receives ``tune-<study>/`` and the retrained run.
        dataset: the already-loaded ``Dataset`` of ``config`` (for this process only).
        command: the command line to record in the retrained run.
        progress: receives a dict per event (``kind`` = ``trial`` or ``retrain``).
        retrain: retrain the best configuration when the search ends (not after a stop).

    Returns:
        A ``TuneResult``.

    Raises:
        ConfigError: a bad space file. StorageError: a bad or unreachable storage.
        TuneError: a bad study name or worker count, a study made with other settings, or every
            trial failing.
    """
    import multiprocessing

    name = study or default_study_name(config)
    if not STUDY_NAME.fullmatch(name):
        raise TuneError(f"study names are letters, digits, '_', '.', '-' (up to 100, starting "
                        f"with a letter or digit); received {name!r}")
    if workers < 1 or (trials is not None and trials < 1):
        raise TuneError(f"--workers and --trials must be at least 1; received workers={workers}, "
                        f"trials={trials}")
    the_space = load_space(space, config)
    folder = files.study_folder(out, name)
    url = storage or default_url(folder)
    check_url(url)
    folder.mkdir(parents=True, exist_ok=True)
    existing = prepare_study(url, name, config, the_space.text)
    progress = progress or (lambda event: None)
    threads = threads_per_worker(workers)
    job = Job(base=config.model_dump(mode="json"), space_text=the_space.text,
              space_source=str(space or "the default search space"), storage=url, study=name,
              trials=trials, deadline=None if timeout is None else time.time() + timeout,
              threads=threads if workers > 1 else 0)  # one worker: this process, as it is
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    tickets = Tickets(ctx, None if trials is None else max(0, trials - existing))
    if workers == 1:
        interrupted = _run_here(job, tickets, stop, progress)
    else:
        interrupted = _run_processes(job, workers, tickets, stop, ctx, progress)
    return _finish(url, name, folder, the_space.text, existing, interrupted,
                   retrain=retrain, workers=workers, threads=threads, out=out, dataset=dataset,
                   command=command, progress=progress)


def _finish(url, name, folder, space_text, existing, interrupted, *, retrain, workers, threads,
            out, dataset, command, progress) -> TuneResult:
    """Write the study folder; retrain the best unless stopped by a signal."""
    with opened(url) as storage:
        return _finish_study(storage, url, name, folder, space_text, existing, interrupted,
                             retrain=retrain, workers=workers, threads=threads, out=out,
                             dataset=dataset, command=command, progress=progress)


def _finish_study(storage, url, name, folder, space_text, existing, interrupted, *, retrain,
                  workers, threads, out, dataset, command, progress) -> TuneResult:
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    files.write_files(folder, study, space_text)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    retrained = _read_old_summary(folder).get("retrained")
    if retrain and not interrupted and complete:
        retrained = _retrain(study, folder, out, dataset, command, progress)
    summary = summarize(study, url, workers, threads, retrained)
    files.write_summary(folder, summary)
    from mnistlab.tune.report import build_report

    build_report(folder, study, summary)
    ran = len(study.get_trials(deepcopy=False)) - existing
    if ran and not complete and not interrupted:
        reasons = {t.user_attrs.get("fail_reason") for t in study.get_trials(deepcopy=False)}
        raise TuneError(f"no trial of study {name!r} completed, so there is no best configuration; "
                        f"reasons: {json.dumps(sorted(r for r in reasons if r))[:500]}")
    return TuneResult(folder=folder, summary=summary, interrupted=interrupted, ran=ran)
