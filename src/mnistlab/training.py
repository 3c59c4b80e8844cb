"""Train the tutorial's MLP and write a complete run directory.

``train(config)`` does what the tutorial notebook does, in order: load the data, hold out a seeded
validation split, scale to [0, 1], build and compile the MLP, train with validation every epoch,
evaluate on the test set, save the model (``.keras`` and ``.h5``) and its architecture (JSON/YAML),
and record everything needed to report, predict, serve, export or rerun.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnistlab import keras_files
from mnistlab.backend import without_tensorflow
from mnistlab.config import Config, label, resolve_data_path, to_toml
from mnistlab.data import Dataset, load_dataset
from mnistlab.data.split import split_train_val
from mnistlab.engine import fit_fast
from mnistlab.epochs import conv_epoch, fit_epoch, keras_kind, trains_conv, trains_fast
from mnistlab.errors import TrainingError, TrainingInterrupted
from mnistlab.files import load_npz, save_npz, write_text
from mnistlab.finish import finish_run
from mnistlab.headstart import HeadStart, starts_without_keras
from mnistlab.preprocess import PreprocessParams
from mnistlab.runlock import RunGuard
from mnistlab.runs import Run, create_run_dir, history_csv, utc_now

Progress = Callable[[int, int, dict], None]


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere since mnistlab was
    imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        import mnistlab

        return time.perf_counter() - mnistlab.IMPORTED_AT


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("mnistlab", "keras", "jax", "jaxlib", "tensorflow", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def _dataset_record(ds: Dataset, n_train: int, n_val: int) -> dict:
    return {
        "name": ds.name, "source": ds.source, "sha256": dict(ds.sha256),
        "image_shape": list(ds.image_shape), "num_classes": ds.num_classes,
        "class_names": list(ds.class_names), "n_train": n_train, "n_val": n_val,
        "n_test": int(len(ds.y_test)), "notes": ds.notes,
    }


class _Stopper:
    """Early stopping on ``val_loss``/``val_accuracy`` with a patience in epochs (0 = off)."""

    def __init__(self, monitor: str, patience: int):
        self.monitor, self.patience = monitor, patience
        self.best, self.wait = None, 0

    def should_stop(self, logs: dict) -> bool:
        if not self.patience:
            return False
        value = logs[self.monitor]
        better = self.best is None or (
            value < self.best if self.monitor == "val_loss" else value > self.best
        )
        if better:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience


class _StopSignal:
    """Turn SIGINT/SIGTERM into a request to stop at the next epoch boundary (after saving).

    A second signal interrupts at once; the last checkpoint is still on disk.
    """

    def __init__(self):
        self.received: str | None = None
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class _EpochEnd:
    """What happens after every epoch, whichever loop trained it.

    Checks the loss is finite, records history.csv, writes the checkpoint, updates the manifest,
    reports progress, and says whether to stop (early stopping or a stop signal). ``model`` is
    the compiled Keras model, or a ``HeadStart`` training without one (checkpoints from its
    arrays).
    """

    def __init__(self, run: Run, model, config: Config, rows: list[dict], progress,
                 stop: _StopSignal, called: float | None = None):
        self.run, self.model, self.config, self.rows = run, model, config, rows
        self.progress, self.stop = progress, stop
        self.stopper = _Stopper(config.train.monitor, config.train.early_stopping)
        for r in rows:  # replay the history so early stopping resumes where it was
            self.stopper.should_stop(r)
        self.t0 = time.perf_counter()
        self.called = self.t0 if called is None else called  # train() was called (perf_counter)
        self.timings: dict[str, float] = {}  # for the manifest: when the first epoch began

    def on_epoch_begin(self, epoch: int) -> None:
        self.t0 = time.perf_counter()
        if not self.timings:
            self.timings = {"first_epoch_at_process_age_s": process_age(),
                            "first_epoch_after_train_call_s": self.t0 - self.called}

    def __call__(self, epoch: int, logs: dict) -> bool:
        from mnistlab.checkpoint import save_checkpoint, save_checkpoint_arrays

        logs = {k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        if not all(math.isfinite(v) for v in logs.values()):
            self.run.update(status="failed", finished=utc_now(), error="diverged")
            raise TrainingError(
                f"training diverged at epoch {epoch + 1} ({logs}). The last good checkpoint "
                f"(epoch {len(self.rows)}) is kept in {self.run.path}. Lower train.learning_rate "
                f"(now {self.config.train.learning_rate}) or choose another optimizer"
            )
        now = time.perf_counter()
        self.rows.append({"epoch": epoch + 1, **logs, "seconds": round(now - self.t0, 4)})
        self.t0 = now
        if isinstance(self.model, HeadStart):  # no Keras model yet: its arrays
            save_checkpoint_arrays(self.run.path, *self.model.checkpoint_values(), epoch + 1,
                                   self.rows)
        else:
            save_checkpoint(self.run.path, self.model, epoch + 1, self.rows)
        write_text(self.run.file("history.csv"), history_csv(self.rows), durable=False)
        self.run.update(epochs_done=epoch + 1, durable=False)
        if self.progress:
            self.progress(epoch + 1, self.config.train.epochs, self.rows[-1])
        return self.stopper.should_stop(logs) or self.stop.received is not None

    on_epoch_end = __call__  # the hook name fit_fast calls on plain callback objects


def _start_run(config: Config, ds: Dataset, out, command, guard: RunGuard | None = None) -> Run:
    """Create the run directory and write what is known before training starts."""
    from mnistlab.backend import active

    train_idx, val_idx = split_train_val(ds.y_train, config.data.val_fraction, config.seed,
                                         config.data.stratify)
    name = ds.name if not config.data.path else "custom"
    run = Run(create_run_dir(out, label(config), name, config.seed), {})
    if guard is not None:  # lock before the manifest says "running" (mnistlab.runlock)
        guard.hold(run, new=True)
    run.update(
        mnistlab_version=_versions().get("mnistlab", "?"), status="running", pid=os.getpid(),
        command=list(command if command is not None else sys.argv), seed=config.seed,
        preset=config.preset, dataset=_dataset_record(ds, len(train_idx), len(val_idx)),
        split_file="split.npz", versions=_versions(), backend=active(),
        platform=platform.platform(), started=utc_now(), finished=None, duration_s=None,
        epochs_planned=config.train.epochs, epochs_done=0, files={},
    )
    write_text(run.file("config.toml"), to_toml(config))
    save_npz(run.file("split.npz"), train_idx=train_idx, val_idx=val_idx)
    pick = np.random.default_rng(config.seed).choice(len(train_idx), size=min(5, len(train_idx)),
                                                      replace=False)
    sample_idx = train_idx[pick]
    save_npz(run.file("samples.npz"), images=ds.x_train[sample_idx],
             labels=ds.y_train[sample_idx], indices=sample_idx)
    h, w = ds.image_shape
    if h == w:  # own-photo preprocessing makes square images like the training data
        write_text(run.file("preprocess.json"), PreprocessParams.for_size(h).to_json() + "\n")
    return run


def _reopen_run(path: str | Path, guard) -> tuple[Run, Config, Dataset]:
    """Open an interrupted run for ``--resume`` and reload exactly the data it trained on."""
    from mnistlab.errors import DataError, RunError
    from mnistlab.runs import load_run

    run = load_run(path, require_complete=False)
    if run.is_complete:
        raise RunError(f"run {run.path} is already complete; nothing to resume")
    if guard is not None:  # refuses a run a live process trains; removes killed writes' temps
        guard.hold(run, new=False)
    config = run.config
    ds = load_dataset(config.data.dataset, path=config.data.path, mirrors=config.data.mirrors)
    if ds.sha256 != run.manifest["dataset"]["sha256"]:
        raise DataError(
            f"the data for {config.data.path or config.data.dataset} changed since {run.path} "
            "started (sha256 differs); resuming would mix datasets. Start a new run instead"
        )
    return run, config, ds


def train(
    config: Config | None = None,
    *,
    dataset: Dataset | None = None,
    out: str | Path = "runs",
    command: list[str] | None = None,
    progress: Progress | None = None,
    report: bool | None = None,
    resume: str | Path | None = None,
    job=None,
    backend: str | None = None,
) -> Run:
    """Run the experiment described by ``config`` (or finish an interrupted run) and return it.

    Args:
        config: a resolved ``Config`` (``mnistlab.config.load_config``); not used with ``resume``.
        dataset: already-loaded data; by default loaded from ``config.data``.
        out: the folder that receives the new run directory.
        command: the command line to record (default ``sys.argv``).
        progress: called after every epoch with ``(epoch, epochs, logs)``; if it has a
            ``step(epoch, epochs, step, steps, logs)`` method, Keras-fit epochs (convnets) call it
            after every step with the running loss and accuracy, and with step 0 at the start.
        report: build figures and report.html (default ``config.report.enabled``).
        resume: an interrupted run directory to continue from its last checkpoint.
        job: a ``mnistlab.cluster.JobSpec`` to join a multi-process job (data parallel over every
            device of every process). Process 0 writes the run directory; the others work in a
            temporary folder that is removed at the end.
        backend: train on this Keras backend (``rerun`` passes the recorded one). By default a
            convnet Keras ``fit`` trains (``epochs.keras_kind``) gets TensorFlow when it is
            installed and everything else (the MLP and conv engines train outside Keras) JAX, unless
            ``KERAS_BACKEND`` says otherwise (``mnistlab.backend.choose``); a resumed run on the
            backend it started on.

    Returns:
        The completed ``Run``.

    Raises:
        DataError: the data cannot be loaded. TrainingError: the loss diverged.
        TrainingInterrupted: SIGINT/SIGTERM arrived; the run was checkpointed and can be resumed.
    """
    import contextlib
    import tempfile

    from mnistlab.backend import choose

    called = time.perf_counter()
    if resume is not None:
        choose(recorded=backend or _recorded_backend(resume))
    else:
        needs_jax = job is not None or (config is not None and config.train.devices != "1")
        choose(keras_kind(config) if config else "mlp", needs_jax=needs_jax, recorded=backend)
    head = resume is None and job is None and config is not None and starts_without_keras(config)
    with (without_tensorflow(load_keras=not head), RunGuard() as guard,
          contextlib.ExitStack() as stack):
        scratch = None
        if job is not None:
            from mnistlab.cluster import join

            join(job)  # before any JAX computation
            if not job.writes_files:
                scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mnistlab-")))
                out, report = scratch, False
        return _train(config, dataset=dataset, out=out, command=command, progress=progress,
                      report=report, resume=resume, guard=guard, job=job, scratch=scratch,
                      called=called, head=head)


def _recorded_backend(run_dir) -> str | None:
    """The backend an interrupted run started on (None if its manifest cannot tell)."""
    try:
        return json.loads((Path(run_dir) / "manifest.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None  # reopening the run reports what is wrong with it


def _in_job(config: Config, job) -> Config:
    """A job trains data parallel over every device of every process."""
    if job is None:
        return config
    return config.model_copy(update={"train": config.train.model_copy(update={"devices": "all"})})


def _agree(job, config: Config, ds: Dataset, what: str) -> None:
    """Every process of a job must train the same config on the same data (refused otherwise)."""
    if job is not None:
        from mnistlab.cluster import require_same

        require_same("configuration, data and run", f"{what}\n{to_toml(config)}{ds.sha256}")


def _shadow(run: Run, folder: Path) -> Run:
    """A copy of what resuming reads, in ``folder``: a process other than 0 writes only there."""
    import shutil

    copy = folder / run.path.name
    copy.mkdir()
    for name in ("manifest.json", "config.toml", "split.npz", "checkpoint.npz", "history.csv"):
        if run.file(name).exists():
            shutil.copy2(run.file(name), copy / name)
    return Run(copy, dict(run.manifest))


def _open(config, *, dataset, out, command, resume, guard, job, scratch):
    """Start a new run or reopen one to resume; return ``(run, config, dataset, parallel)``."""
    from mnistlab.distribution import data_parallel_for

    if resume is not None:
        # A process other than 0 reads process 0's run but locks and writes only its own copy.
        run, config, ds = _reopen_run(resume, guard if scratch is None else None)
        _agree(job, config, ds, f"resume {run.path.name}")
        if scratch is not None:
            run = _shadow(run, scratch)
            guard.hold(run, new=True)
        parallel = data_parallel_for(config)  # several devices (mnistlab.distribution)
    else:
        config = _in_job(config, job)
        parallel = data_parallel_for(config)  # checked before any file is written
        config = parallel.config if parallel else config  # train.loop "fit": fast is 1-device
        ds = dataset or load_dataset(config.data.dataset, path=config.data.path,
                                     mirrors=config.data.mirrors)
        if dataset is not None and config.data.dataset != ds.name and not config.data.path:
            config = config.model_copy(update={"data": config.data.model_copy(
                update={"dataset": ds.name})})
        config, path_given = resolve_data_path(config)  # config.toml records it absolute
        _agree(job, config, ds, "new run")
        run = _start_run(config, ds, out, command, guard)
        if path_given:
            run.update(dataset={**run.manifest["dataset"], "path_given": path_given})
    if job is not None:
        run.update(job=job.describe())
    return run, config, ds, parallel


def _train(config, *, dataset, out, command, progress, report, resume, guard, job, scratch,
           called, head=False) -> Run:
    from mnistlab.checkpoint import load_checkpoint
    from mnistlab.model import build_model, compile_model, to_input

    started = time.time()
    run, config, ds, parallel = _open(config, dataset=dataset, out=out, command=command,
                                      resume=resume, guard=guard, job=job, scratch=scratch)
    split = load_npz(run.file("split.npz"))
    train_idx, val_idx = split["train_idx"], split["val_idx"]

    c = ds.num_classes
    # Select on uint8. The fast loop scales each batch itself, Keras fit one epoch at a time (no
    # float32 copy of the training set: 170-190 MB less on full-size data); validation and
    # multi-device training take floats.
    x, xv = ds.x_train[train_idx], ds.x_train[val_idx]
    if not head:  # the head start scales them beside the engine's load (``PlanFit``)
        xv = to_input(xv)
    if parallel:
        x = to_input(x)
    y, yv = ds.y_train[train_idx], ds.y_train[val_idx]
    if parallel:  # before the model is built, so its variables live on every device
        (x, y), (xv, yv) = parallel.start(run, (x, y), (xv, yv))
    steps = math.ceil(len(x) / config.train.batch_size)
    rows: list[dict] = []
    start_epoch = 0
    head_start = None
    if head:  # Keras loads on a thread while the first epochs train (mnistlab.headstart)
        model = head_start = HeadStart(config, ds.image_shape, c, steps)
        run.update(params=head_start.params)
    else:
        model = build_model(config.model, ds.image_shape, c, seed=config.seed,
                            precision=config.train.precision)
        compile_model(model, config.train, steps)
        if resume is not None:
            start_epoch, rows = load_checkpoint(run.path, model)
            run.update(status="running", pid=os.getpid(), resumed_at=utc_now(),
                       resumed_from_epoch=start_epoch)
        else:
            run.update(params=int(model.count_params()))

    try:
        with _StopSignal() as stop:
            on_epoch_end = _EpochEnd(run, model, config, rows, progress, stop, called)
            try:
                if head_start is not None:
                    engine = head_start.fit(x, y, xv, yv, on_epoch_end)
                else:
                    engine = _train_loop(model, x, y, xv, yv, c, config, start_epoch,
                                         on_epoch_end, parallel)
                if engine:  # which fast path and threads trained it
                    run.update(engine=engine)
            except KeyboardInterrupt:
                stop.received = stop.received or "SIGINT"
            if stop.received:
                run.update(status="interrupted", interrupted_by=stop.received, finished=None)
                raise TrainingInterrupted(
                    f"{stop.received} received: stopped after epoch {len(rows)} of "
                    f"{config.train.epochs}; the checkpoint is saved. Continue with "
                    f"`mnistlab train --resume {run.path}`"
                )
    finally:
        if parallel:  # evaluate and save on one device, as any later process loads it
            parallel.stop()
        if head_start is not None:  # its thread changes sys.modules while it imports Keras
            head_start.wait()
    if head_start is not None and not head_start.keras_free():
        model = head_start.model()  # the Keras model, holding the trained weights
    t0 = time.perf_counter()
    if head_start is not None:
        key = head_start.template_key
    else:  # a resumed head-start run, say: its template if none is kept yet
        key = keras_files.key(config, ds.image_shape, c) if starts_without_keras(config) else None
    finish_run(run, model, ds, rows, ds.y_train[val_idx], config, started, key)
    timings = {**on_epoch_end.timings, "finish_s": time.perf_counter() - t0}
    run.update(timings={k: round(v, 3) for k, v in timings.items()})
    if config.report.enabled if report is None else report:
        from mnistlab.report import build_report

        build_report(run.path)
    return run


def _train_loop(model, x, y, xv, yv, num_classes, config: Config, start_epoch: int, on_epoch_end,
                parallel=None):
    """Train epochs ``start_epoch..epochs-1`` with the configured loop, calling ``on_epoch_end``;
    return the engine record of ``fit_fast`` or the conv engine (None for Keras fit).

    Both loops see the same per-epoch order (``engine.permutation(seed, epoch, n)``), so a
    resumed run trains on exactly the batches an uninterrupted one would.
    """
    if trains_fast(config):
        history = fit_fast(
            model, x, y, xv, yv, epochs=config.train.epochs, batch_size=config.train.batch_size,
            optimizer=model.optimizer, seed=config.seed, shuffle=config.train.shuffle,
            initial_epoch=start_epoch, callbacks=[on_epoch_end],
        )
        return history.engine
    if trains_conv(config) and parallel is None:
        engine = None
        for epoch in range(start_epoch, config.train.epochs):
            on_epoch_end.on_epoch_begin(epoch)
            logs, engine = conv_epoch(model, x, y, xv, yv, config, epoch, on_epoch_end.progress)
            if on_epoch_end(epoch, logs):
                break
        return engine
    eye = np.eye(num_classes, dtype=np.float32)
    y1, yv1 = eye[y], eye[yv]
    for epoch in range(start_epoch, config.train.epochs):
        on_epoch_end.on_epoch_begin(epoch)
        logs = fit_epoch(model, x, y1, xv, yv1, config, epoch, parallel, on_epoch_end.progress)
        if on_epoch_end(epoch, logs):
            break
    return None


def compare_weights(a, b) -> bool:
    """True when two models have bit-identical weights (same shapes, same bytes)."""
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(
        x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(wa, wb, strict=True)
    )


def rerun(path: Run | str | Path, *, out: str | Path | None = None,
          progress: Progress | None = None, report: bool | None = None):
    """Train again from a run's recorded config and check the result is bit-identical.

    Args:
        path: a complete run (a ``Run`` or its directory).
        out: where the new run goes (default: next to the original).
        progress: called after every epoch with ``(epoch, epochs, logs)``, as for ``train``.
        report: build figures and report.html for the new run (default: the recorded
            ``config.report.enabled``, as ``train`` does).

    Returns:
        ``(new_run, report)`` where report is a dict with ``weights_identical``,
        ``metrics_identical``, the two test accuracies and ``note``: why the bits may differ (the
        run was trained by another version of the compiled loop's arithmetic), or None.
    """
    from mnistlab.runs import as_run

    old = as_run(path)
    new = train(old.config, out=out or old.path.parent, progress=progress, report=report,
                backend=old.manifest.get("backend"))
    same_weights = compare_weights(old.load_model(), new.load_model())
    was, now = old.metrics, new.metrics
    keys = ("test_loss", "test_accuracy", "confusion_matrix")
    return new, {
        "weights_identical": same_weights,
        "metrics_identical": all(was.get(k) == now.get(k) for k in keys),
        "old_accuracy": was.get("test_accuracy"),
        "new_accuracy": now.get("test_accuracy"),
        "note": (_numerics_note(old.manifest.get("engine"), new.manifest.get("engine"))
                 or _probabilities_note(was, now)),
    }


def _probabilities_note(was: dict, now: dict) -> str | None:
    """Why a rerun's test metrics may differ in their last digits though its weights do not:
    the original run's test probabilities came from Keras' ``predict``, the new one's from the
    compiled loop's forward pass (``mnistlab.finish``; runs before 2026-12-02)."""
    names = {"keras": "Keras' predict", "compiled loop": "the compiled loop's forward pass"}
    before, after = was.get("probabilities", "keras"), now.get("probabilities", "keras")
    if before == after:
        return None
    before, after = names.get(before, before), names.get(after, after)
    return (f"the original run's test probabilities came from {before}; this version of mnistlab "
            f"computes them with {after}, whose last bits differ, so the test metrics may differ "
            "in their last digits. Rerun the new run to check that this version reproduces "
            "itself")


_ENGINES = {"Keras fit": "Keras fit", "conv": "mnistlab's conv engine",
            "compiled": "mnistlab's compiled loop", "numpy": "mnistlab's numpy loop",
            "scan": "a jitted JAX scan"}


def _numerics_note(old: dict | None, new: dict | None) -> str | None:
    """Why a rerun may differ in its last bits: the run was trained by another engine (a
    convnet trained with Keras fit before mnistlab's conv engine took such models over) or by
    another version of the compiled loop's arithmetic (``engine.kernels.NUMERICS``); None when
    both used the same."""
    was_path = (old or {}).get("path") or "Keras fit"
    now_path = (new or {}).get("path") or "Keras fit"
    if was_path != now_path:
        return (f"the original run was trained by {_ENGINES.get(was_path, was_path)}; this version "
                f"of mnistlab trains it with {_ENGINES.get(now_path, now_path)}, whose results "
                "differ. Rerun the new run to check that this version reproduces itself")
    if was_path != "compiled":
        return None
    was, now = old.get("numerics", 1), new.get("numerics", 1)
    if was == now:
        return None
    return (f"the original run was trained by an earlier version of mnistlab's compiled training "
            f"loop (numerics {was}; this version has {now}), whose results differ in the last "
            "bits. Rerun the new run to check that this version reproduces itself")
