"""A tuning worker: takes trials one at a time until the study has enough, time is up, or a stop.

``mnistlab tune --workers 1`` runs one worker in the calling process; ``--workers W`` starts W
processes with multiprocessing's "spawn" (numba's OpenMP threads are not fork-safe), each on
``threads`` cores so they do not fight over them. This module imports nothing heavy at the top:
a spawned worker sets its thread limits before numpy, numba or JAX load.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_FAILURES_IN_A_ROW = 5


@dataclass(frozen=True)
class Job:
    """What every worker of one ``mnistlab tune`` command shares (picklable).

    Attributes:
        base: the base configuration as a dict (``Config.model_dump``).
        space_text: the search space TOML; space_source: its file name, for messages.
        storage: the storage URL; study: the study name.
        trials: stop when the study holds this many trials (None: no limit).
        deadline: ``time.time()`` after which no trial starts (None: no limit).
        threads: cores for each worker process (0: the process's own default).
    """

    base: dict
    space_text: str
    space_source: str
    storage: str
    study: str
    trials: int | None
    deadline: float | None
    threads: int = 0


class Tickets:
    """How many more trials this machine may start, shared by its worker processes."""

    def __init__(self, ctx, count: int | None):
        self.unlimited = count is None
        self.value = ctx.Value("q", 0 if count is None else count)

    def take(self) -> bool:
        if self.unlimited:
            return True
        with self.value.get_lock():
            if self.value.value <= 0:
                return False
            self.value.value -= 1
            return True


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps BLAS, OpenMP, numba and XLA at ``threads`` threads."""
    n = str(threads)
    xla = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" if threads == 1 else ""
    env = {"OPENBLAS_NUM_THREADS": n, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n,
           "NUMBA_NUM_THREADS": n}
    if xla:
        env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla).strip()
    return env


def sampler_seed(seed: int, worker: int, existing: int) -> int:
    """A sampler seed per worker and session: equal seeds would propose the same points."""
    import numpy as np

    return int(np.random.SeedSequence([seed, worker, existing]).generate_state(1)[0])


def run_worker(job: Job, worker: int, tickets: Tickets, stop, report: Callable[[dict], None],
               ) -> None:
    """Run trials until done. ``stop`` is a multiprocessing Event checked between trials.

    ``report`` receives one dict per finished trial (``kind="trial"``).

    Raises:
        TuneError: MAX_FAILURES_IN_A_ROW trials failed in a row (something is wrong with every
            configuration, not with one). StorageError: the storage cannot be reached.
    """
    from mnistlab.config import Config
    from mnistlab.data import load_dataset
    from mnistlab.tune.objective import Objective
    from mnistlab.tune.space import parse_space
    from mnistlab.tune.storage import opened
    from mnistlab.tune.trainer import split_for

    base = Config.model_validate(job.base)
    space = parse_space(job.space_text, base, job.space_source)
    ds = load_dataset(base.data.dataset, path=base.data.path, mirrors=base.data.mirrors)
    objective = Objective(space, base, split_for(base, ds))
    with opened(job.storage) as storage:
        _trials(job, worker, tickets, stop, report, objective, storage, base.seed, space.settings)


def _trials(job: Job, worker: int, tickets: Tickets, stop, report, objective, storage, seed: int,
            settings) -> None:
    """The worker's loop over trials (see ``run_worker``)."""
    import optuna

    from mnistlab.tune.algorithms import make_pruner, make_sampler
    from mnistlab.tune.errors import TuneError

    existing = len(storage.get_all_trials(storage.get_study_id_from_name(job.study),
                                          deepcopy=False))
    study = optuna.load_study(
        study_name=job.study, storage=storage, pruner=make_pruner(settings),
        sampler=make_sampler(settings, sampler_seed(seed, worker, existing)))
    failures: list[str] = []

    def finished(_study, trial) -> None:
        report(_event(trial, worker))
        if trial.state == optuna.trial.TrialState.FAIL:
            failures.append(trial.user_attrs.get("fail_reason", "unknown"))
        else:
            failures.clear()

    while not stop.is_set() and (job.deadline is None or time.time() < job.deadline):
        if job.trials is not None and len(study.get_trials(deepcopy=False)) >= job.trials:
            break  # other machines sharing the study have done the rest
        if not tickets.take():
            break
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[finished])
        if len(failures) >= MAX_FAILURES_IN_A_ROW:
            raise TuneError(
                f"{len(failures)} trials in a row failed, so the study stops; the last: "
                f"{failures[-1]}. Check the search space and the base configuration"
            )


def _event(trial, worker: int) -> dict:
    return {
        "kind": "trial", "worker": worker, "number": trial.number, "state": trial.state.name,
        "value": trial.value, "params": trial.params,
        "epochs": len(trial.intermediate_values),
        "seconds": trial.duration.total_seconds() if trial.duration else None,
        "reason": trial.user_attrs.get("fail_reason"),
    }


def process_main(job: Job, worker: int, tickets: Tickets, stop, events) -> None:
    """Entry point of a spawned worker process.

    SIGINT is ignored (a Ctrl-C reaches the whole process group; the parent decides and passes
    it on as SIGTERM): the first SIGTERM stops after the current trial, a second one at once
    (the trial is recorded as failed, "interrupted").
    """
    os.environ.update(thread_env(job.threads))  # before numpy, numba or JAX are imported
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    received = []

    def on_term(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    import optuna
    from threadpoolctl import threadpool_limits

    from mnistlab.errors import MnistlabError

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the parent reports trials
    try:
        with threadpool_limits(limits=job.threads):
            run_worker(job, worker, tickets, stop, events.put)
    except MnistlabError as e:
        events.put({"kind": "error", "worker": worker, "message": str(e)})
    except KeyboardInterrupt:
        events.put({"kind": "interrupted", "worker": worker})
    events.put({"kind": "done", "worker": worker})
