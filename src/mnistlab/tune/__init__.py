"""``mnistlab tune``: hyper-parameter search on Optuna (see ``mnistlab.tune.study``)."""
