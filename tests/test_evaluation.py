"""The test metrics computed without sklearn are sklearn's: the same numbers and report text."""

import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix

from mnistlab.evaluation import compute_metrics

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


@pytest.mark.parametrize(("c", "n", "names"), [
    (10, 10_000, [str(i) for i in range(10)]),
    (10, 50, FASHION),  # few samples: some classes never predicted or absent
    (3, 7, ["a", "bb", "a class name longer than the avg lines"]),
    (2, 50, ["x", "y"]),
])
def test_metrics_and_report_are_sklearns(c, n, names):
    rng = np.random.default_rng(c * n)
    y = rng.integers(0, c, n)
    if c == 10:
        y[y == 3] = 4  # class 3 has no samples: zero division
    probs = rng.random((n, c))
    probs[:, 0] *= 0.1  # class 0 is rarely predicted
    pred = probs.argmax(1)
    metrics, text = compute_metrics(probs, y, names)
    kw = {"labels": list(range(c)), "target_names": names, "digits": 4, "zero_division": 0}
    assert text == classification_report(y, pred, **kw)
    want = classification_report(y, pred, output_dict=True, **kw)

    def row(d):
        return {"precision": d["precision"], "recall": d["recall"], "f1": d["f1-score"],
                "support": int(d["support"])}

    assert metrics["per_class"] == {str(i): row(want[name]) for i, name in enumerate(names)}
    assert metrics["macro_avg"] == row(want["macro avg"])
    assert metrics["weighted_avg"] == row(want["weighted avg"])
    assert metrics["test_accuracy"] == want["accuracy"]
    assert metrics["confusion_matrix"] == confusion_matrix(y, pred, labels=list(range(c))).tolist()
