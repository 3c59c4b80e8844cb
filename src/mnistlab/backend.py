"""Keras backend housekeeping shared by training and model loading."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


@contextlib.contextmanager
def without_tensorflow():
    """On the JAX backend, keep Keras from importing TensorFlow just to save or load a model.

    When (de)serialising, Keras asks whether TensorFlow is available (to recognise TF shapes and
    dtypes), which imports all of it if it is installed: about 3 s and 600 MB for a model that
    never touches TensorFlow. A ``None`` entry in ``sys.modules`` (Python's documented way to
    block an import) makes Keras see what it sees on an install without TensorFlow. The block is
    lifted afterwards, so later code in the process can still import TensorFlow itself.
    """
    keras = import_keras()
    if keras.backend.backend() != "jax" or "tensorflow" in sys.modules:
        yield
        return
    sys.modules["tensorflow"] = None
    try:
        yield
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]


# Imported by Keras at start-up for features mnistlab never uses through Keras (its image-gallery
# plot, pandas input to fit): 0.6-0.75 s of the ~2.2 s ``import keras`` on a 2-core machine.
_NOT_FOR_KERAS = ("matplotlib", "pandas")


def import_keras():
    """``import keras``, the first time without matplotlib and pandas.

    Same mechanism as ``without_tensorflow``: Keras imports both inside ``try/except ImportError``
    and then works without them. Afterwards the block is lifted, so mnistlab's own figures (which
    import matplotlib themselves) and user code are unaffected; only ``keras.visualization`` and
    pandas objects passed to ``Model.fit`` stay unavailable in this process.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"]
    blocked = [m for m in _NOT_FOR_KERAS if m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None
    try:
        import keras
    finally:
        for m in blocked:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
    if keras.backend.backend() == "jax":
        use_compile_cache()
    return keras


def compile_cache_dir() -> Path | None:
    """Where JAX keeps compiled programs between runs, or None when switched off.

    ``MNISTLAB_JAX_CACHE``: a folder, or ``off``; default ``$XDG_CACHE_HOME/mnistlab/jax``
    (``~/.cache/mnistlab/jax``).
    """
    setting = os.environ.get("MNISTLAB_JAX_CACHE", "").strip()
    if setting.lower() in ("0", "off", "no", "false", "none"):
        return None
    if setting:
        return Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnistlab" / "jax"


def use_compile_cache() -> None:
    """Turn on JAX's persistent compilation cache, unless the user set up their own.

    Building the tutorial's model compiles one small XLA program per initializer shape: 1.3 s
    of a 14 s training run; read back from the cache, 0.35 s. A folder that cannot be created
    or written just means no cache. Entries are a few KB per program and never expire (a size
    cap needs the ``filelock`` package); deleting the folder is always safe.
    """
    import jax

    folder = compile_cache_dir()
    if folder is None or jax.config.jax_compilation_cache_dir:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    if not os.access(folder, os.W_OK | os.X_OK):
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
