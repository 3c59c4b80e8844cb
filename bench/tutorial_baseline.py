"""The tutorial's training code as written, for timing: Keras 3 on TensorFlow, float64 input, fit.

Two departures, both needed to run it here and neither touching the training itself:
the data comes from the Debian IDX files (no internet for ``keras.datasets``), and a callback
records the wall time of each epoch, printed as one JSON line at the end for bench/train_speed.py.

Run: .venv/bin/python bench/tutorial_baseline.py --epochs 50
"""

import argparse
import gzip
import json
import os
import time

os.environ["KERAS_BACKEND"] = "tensorflow"  # the tutorial used tf.keras

import numpy as np  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from tensorflow import keras  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(name, offset):
    with gzip.open(f"{DATA}/{name}") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=50)
args = parser.parse_args()
t_start = time.perf_counter()

# ---- the tutorial from here on ----
x_train = read_idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
y_train = read_idx("train-labels-idx1-ubyte.gz", 8)
x_test = read_idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
y_test = read_idx("t10k-labels-idx1-ubyte.gz", 8)

x_train = x_train / 255
x_test = x_test / 255

y_train = keras.utils.to_categorical(y_train, 10)
y_test = keras.utils.to_categorical(y_test, 10)

x_train, x_val, y_train, y_val = train_test_split(x_train, y_train, test_size=0.3, random_state=111)

model = keras.models.Sequential(
    [
        keras.layers.Flatten(input_shape=(28, 28), name="flatten"),
        keras.layers.Dense(100, activation="relu", name="dense1"),
        keras.layers.Dense(64, activation="relu", name="dense2"),
        keras.layers.Dense(32, activation="relu", name="dense3"),
        keras.layers.Dense(10, activation="softmax", name="output"),
    ]
)
model.compile(
    optimizer=keras.optimizers.SGD(learning_rate=0.01),
    loss="categorical_crossentropy",
    metrics=["accuracy"],
)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.t0)


times = []
t_train = time.perf_counter()
history = model.fit(
    x_train,
    y_train,
    epochs=args.epochs,
    batch_size=128,
    validation_data=(x_val, y_val),
    verbose=0,
    callbacks=[EpochTimer()],
)
train_seconds = time.perf_counter() - t_train
test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
# ---- end of the tutorial ----

print(
    json.dumps(
        {
            "epoch_seconds": times,
            "train_seconds": train_seconds,
            "wall_seconds": time.perf_counter() - t_start,
            "val_accuracy": history.history["val_accuracy"][-1],
            "test_accuracy": float(test_acc),
        }
    )
)
