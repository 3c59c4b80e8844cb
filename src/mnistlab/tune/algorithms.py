"""The sampler and pruner a study uses, from the space's ``[tune]`` settings."""

from __future__ import annotations

from mnistlab.tune.space import TuneSettings


def make_sampler(settings: TuneSettings, seed: int):
    """TPE, seeded, after ``sampler_startup_trials`` random trials.

    ``constant_liar`` makes parallel workers treat each other's running trials as bad results,
    so they do not all sample the same promising point. ``multivariate`` with ``group`` models
    the parameters jointly, per group of parameters that appear together (the widths of the
    second and third layer exist only in deeper networks): Optuna's advice for conditional
    spaces like ours. Both are marked experimental in Optuna; their warnings are silenced here.
    """
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(n_startup_trials=settings.sampler_startup_trials,
                                          seed=seed, constant_liar=True, multivariate=True,
                                          group=True)


def make_pruner(settings: TuneSettings):
    """Median pruning: stop a trial whose validation accuracy at an epoch is below the median of
    earlier trials at that epoch (after ``pruner_startup_trials`` trials and
    ``pruner_warmup_epochs`` epochs); or no pruning."""
    import optuna

    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials,
                                       n_warmup_steps=settings.pruner_warmup_epochs)
