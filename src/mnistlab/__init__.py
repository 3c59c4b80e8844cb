"""mnistlab: the classic Keras MNIST tutorial as a tool.

Importing this package is cheap: Keras and JAX load only when a function that needs them runs.
The Keras backend defaults to JAX; set ``KERAS_BACKEND`` before importing to choose another.
"""

import os
import time

IMPORTED_AT = time.perf_counter()  # for timings where /proc cannot say when the process started

# Keras reads this once, at its own import; it must be set before anything imports keras.
# MNISTLAB_DEFAULT_BACKEND marks the choice as ours (not the user's), so training a convnet may
# still pick TensorFlow before keras is imported (mnistlab.backend.choose); children inherit both.
if "KERAS_BACKEND" not in os.environ:
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["MNISTLAB_DEFAULT_BACKEND"] = "1"
# Keras imports TensorFlow (when installed) to serialise models; keep its C++ start-up chatter quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "mnistlab.data",
    "split_train_val": "mnistlab.data.split",
    "load_config": "mnistlab.config",
    "train": "mnistlab.training",
    "load_run": "mnistlab.runs",
    "load_study": "mnistlab.tune.folder",
    "evaluate": "mnistlab.evaluation",
    "Predictor": "mnistlab.inference",
    "preprocess_image": "mnistlab.preprocess",
    "progress": "mnistlab.notebook",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
