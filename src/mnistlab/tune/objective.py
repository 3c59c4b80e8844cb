"""One trial: a configuration from the sampler, trained on the split, scored on validation.

The score is the validation accuracy after the last epoch: the model ``mnistlab train`` would
save. It is reported every epoch so the pruner can stop a trial that trails the others. The test
set is never touched here.
"""

from __future__ import annotations

import os
import socket

from mnistlab.config import Config
from mnistlab.tune.space import Space, suggest_config
from mnistlab.tune.trainer import Split, fit_config

CONFIG_ATTR = "config"  # user attribute: the trial's full configuration (a dict)
REASON_ATTR = "fail_reason"  # user attribute: why a trial failed, or why it was pruned
WORKER_ATTR = "worker"  # user attribute: host:pid of the process that ran the trial


class Objective:
    """Callable for ``optuna.Study.optimize``: returns the trial's final validation accuracy."""

    def __init__(self, space: Space, base: Config, split: Split):
        self.space, self.base, self.split = space, base, split

    def __call__(self, trial) -> float:
        import optuna

        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        try:
            config = suggest_config(trial, self.space, self.base)
            trial.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
            rows = fit_config(config, self.split, lambda e, logs: self._epoch(trial, e, logs))
        except optuna.TrialPruned as e:
            trial.set_user_attr(REASON_ATTR, str(e))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(REASON_ATTR, "interrupted: a second Ctrl-C or SIGTERM")
            raise
        except Exception as e:  # recorded with the trial; the study goes on (see worker.py)
            trial.set_user_attr(REASON_ATTR, f"{type(e).__name__}: {e}")
            raise
        return rows[-1]["val_accuracy"]

    @staticmethod
    def _epoch(trial, epoch: int, logs: dict) -> bool:
        import optuna

        trial.report(logs["val_accuracy"], epoch + 1)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after epoch {epoch + 1}: val_accuracy {logs['val_accuracy']:.4f} "
                "is below the median of earlier trials at that epoch"
            )
        return False
