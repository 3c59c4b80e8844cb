"""Keras backend housekeeping shared by training and model loading.

Which backend trains what, by measurement (``bench/cnn_engines.py``, keras-io convnet on full
Fashion-MNIST, 2 idle cores): JAX is the fastest for the tutorial's MLP, but for convnets
Keras/TensorFlow takes 14.0-14.3 s per epoch against 51.8 s on Keras/JAX (XLA's CPU
convolutions; its XNNPACK and oneDNN options did not help: 77 and 50 s). So a convnet trains on
TensorFlow when ``tensorflow`` is installed (the ``[tensorflow]`` extra) and the user did not set
``KERAS_BACKEND``, with TensorFlow's op determinism on (same speed, measured) so reruns and
resumes stay bit-identical. Convnets mnistlab's own conv engine trains (``epochs.trains_conv``:
no batch normalisation, constant learning rate, ...) stay on JAX: Keras only builds, evaluates
and saves them, and JAX loads faster and lighter.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


def user_chose_backend() -> bool:
    """True when ``KERAS_BACKEND`` was set by the user rather than defaulted by mnistlab."""
    return "KERAS_BACKEND" in os.environ and os.environ.get("MNISTLAB_DEFAULT_BACKEND") != "1"


def _tensorflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def choose(kind: str = "mlp", *, needs_jax: bool = False, recorded: str | None = None) -> str:
    """Pick the Keras backend for training a ``kind`` model and set it, if keras is not imported
    yet; return the backend training will use.

    Args:
        kind: ``"mlp"`` (JAX) or ``"cnn"``, a convnet Keras ``fit`` trains (TensorFlow when
            installed). Convnets mnistlab's conv engine trains count as ``"mlp"``
            (``epochs.keras_kind``): Keras only builds, evaluates and saves them.
        needs_jax: the training needs JAX (several devices or processes).
        recorded: the backend a run was trained on (resume, rerun): used whatever else holds.

    Raises:
        TrainingError: keras is already imported on another backend than ``recorded`` (the result
            could not be bit-identical).
    """
    from mnistlab.errors import TrainingError

    if recorded:
        want = recorded
    elif user_chose_backend():
        want = os.environ["KERAS_BACKEND"]
    elif kind == "cnn" and not needs_jax and _tensorflow_installed():
        want = "tensorflow"
    else:
        want = "jax"
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = want
        if want == "tensorflow":  # measured: 12.8 vs 18.5 s/epoch with TF's default pools
            from mnistlab.engine.blas import available_cores

            os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
            os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(available_cores()))
        return want
    active = sys.modules["keras"].backend.backend()
    if recorded and active != recorded:
        raise TrainingError(
            f"this run was trained on the {recorded} backend but Keras is already loaded on "
            f"{active} in this process, so the result could not be bit-identical. Start a new "
            f"process with KERAS_BACKEND={recorded}"
        )
    return active


def active() -> str | None:
    """The backend Keras runs on in this process: Keras' own once imported, else the one it will
    load (``KERAS_BACKEND``, which ``choose`` sets)."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    return os.environ.get("KERAS_BACKEND")


@contextlib.contextmanager
def without_tensorflow(load_keras: bool = True):
    """On the JAX backend, keep Keras from importing TensorFlow just to save or load a model.

    When (de)serialising, Keras asks whether TensorFlow is available (to recognise TF shapes and
    dtypes), which imports all of it if it is installed: about 3 s and 600 MB for a model that
    never touches TensorFlow. A ``None`` entry in ``sys.modules`` (Python's documented way to
    block an import) makes Keras see what it sees on an install without TensorFlow. The block is
    lifted afterwards, so later code in the process can still import TensorFlow itself.

    ``load_keras``: import Keras first (``import_keras``); False leaves that to the caller (a
    thread that imports it meanwhile).
    """
    if load_keras:
        import_keras()
    if active() != "jax" or "tensorflow" in sys.modules:
        yield
        return
    sys.modules["tensorflow"] = None
    try:
        yield
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]


# Imported by Keras at start-up for features mnistlab never uses through Keras (its image-gallery
# plot, pandas input to fit, its scikit-learn wrappers): 0.6-0.75 s and 1.0 s of the ~2.6 s
# ``import keras`` on a 2-core machine.
_NOT_FOR_KERAS = ("matplotlib", "pandas", "sklearn")


def import_keras():
    """``import keras``, the first time without matplotlib, pandas and scikit-learn.

    Same mechanism as ``without_tensorflow``: Keras imports both inside ``try/except ImportError``
    and then works without them. Afterwards the block is lifted, so mnistlab's own figures (which
    import matplotlib themselves) and user code are unaffected; only ``keras.visualization``,
    pandas objects passed to ``Model.fit`` and ``keras.wrappers`` stay unavailable in this process.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"]
    blocked = [m for m in _NOT_FOR_KERAS if m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None
    try:
        with _quiet_native_stderr(os.environ.get("KERAS_BACKEND") == "tensorflow"):
            import keras
    finally:
        for m in blocked:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
    if keras.backend.backend() == "jax":
        use_compile_cache()
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()  # bit-identical reruns; same speed
    return keras


@contextlib.contextmanager
def _quiet_native_stderr(quiet: bool):
    """Silence what C++ code writes to stderr while TensorFlow loads.

    TensorFlow prints start-up notes (oneDNN, absl) straight to file descriptor 2 before its log
    level setting applies; a user training a convnet should not see them. Python-level errors
    still surface: they are raised, and printed after stderr is back.
    """
    if not quiet or "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow  # noqa: F401  the import that prints

                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


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
