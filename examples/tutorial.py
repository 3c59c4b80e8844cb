"""
Title: The Keras MNIST MLP tutorial, through mnistlab's library API
Description: Load MNIST, hold out 30 % for validation, train the 784-100-64-32-10 MLP with SGD,
evaluate, predict, and reload the saved model — the notebook's steps as a script.

Run it as ``python examples/tutorial.py`` (the tutorial: MNIST, 50 epochs), or on data that ships
with scikit-learn: ``python examples/tutorial.py --dataset digits --epochs 5``.
"""

import argparse

import numpy as np

import mnistlab

parser = argparse.ArgumentParser(description=__doc__.split("\n")[2])
parser.add_argument("--dataset", default="mnist")
parser.add_argument("--epochs", type=int, default=50)
parser.add_argument("--out", default="runs")
args = parser.parse_args()

"""
## Prepare the data

`load_dataset` returns uint8 images `(N, H, W)` and integer labels, with where they came from.
The tutorial holds out 30 % of the training set for validation with `random_state=111`;
`split_train_val` returns the indices of that exact split.
"""

ds = mnistlab.load_dataset(args.dataset)
train_idx, val_idx = mnistlab.split_train_val(ds.y_train, val_fraction=0.3, seed=111)
print("x_train:", ds.x_train[train_idx].shape, "x_val:", ds.x_train[val_idx].shape,
      "x_test:", ds.x_test.shape)

"""
## Build the model and train

The configuration is data: start from the `tutorial` preset and override what you need.
`train` builds the MLP (SGD, lr 0.01, categorical cross-entropy, batch 128), trains it with
validation every epoch, evaluates it on the test set and writes a run directory.
"""

config = mnistlab.load_config(
    "tutorial", overrides=[f"train.epochs={args.epochs}"], data__dataset=args.dataset
)
run = mnistlab.train(
    config, dataset=ds, out=args.out, report=False,
    progress=lambda epoch, epochs, logs: print(
        f"epoch {epoch}/{epochs} loss {logs['loss']:.4f} val_accuracy {logs['val_accuracy']:.4f}"
    ),
)

"""
## Evaluate

The run recorded the test metrics; evaluating the saved model again gives the same figures.
"""

metrics, report = mnistlab.evaluate(run.path)
print(f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f}")
print(report)

"""
## Predict and reload

The saved model loads back (safely, after a sha256 check) and predicts probabilities,
as the tutorial does with `model.predict` on a test image.
"""

reloaded = mnistlab.load_run(run.path)
model = reloaded.load_model()
probabilities = np.asarray(model(ds.x_test[:1].astype("float32") / 255.0))[0]
print("probabilities:", np.round(probabilities, 3))
print("predicted:", int(probabilities.argmax()), "true:", int(ds.y_test[0]))
print("run directory:", run.path)
