"""The fast paths: a Keras MLP read into a layer plan, trained and run outside Keras.

- ``fit_fast``: train like ``model.fit`` on compiled code, numpy or one jitted JAX scan per
  epoch (``engine.fit``); ``permutation`` is the seeded order of each epoch.
- ``prediction_plan`` / ``training_plan``: read a model into its steps (``engine.plan``).
- ``Network``: a prediction plan's forward pass, numpy for small batches and compiled code for
  big ones (``engine.forward``).

Importing this package loads numpy and nothing heavier: Keras, JAX and numba are imported when a
function needs them.
"""

from mnistlab.engine.fit import History, fit_fast, permutation
from mnistlab.engine.forward import Network
from mnistlab.engine.plan import prediction_plan, training_plan

__all__ = ["History", "Network", "fit_fast", "permutation", "prediction_plan", "training_plan"]
