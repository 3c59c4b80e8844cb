"""Compile the training kernels in a background process, so that nobody waits for the compiler.

numba compiles ``engine.kernels`` once per machine (about 11-14 s of one core; later processes
load the machine code from the cache in a fraction of a second), then the convnet engine's
``engine.conv_kernels`` (about 150 s more; ``mnistlab train`` on a convnet compiles the parts it
calls itself, saying so, if they are not cached yet, and starts this for the rest) and the
augmentation warp (a few seconds). ``start()`` runs
that compilation in a separate, low-priority process (``python -m mnistlab.engine.warm``) and
returns a handle whose ``ready()`` says when the training kernels are cached; meanwhile
``JitLoop`` trains on the numpy copy of the kernels (``engine.replica``, the same bits) and
switches at the next epoch boundary. Started by a training run (``--after PID``), the process
compiles the convnet kernels only once that run has exited, so that they do not slow the rest of
it, and outlives it: the next run finds the cache complete.
``make run`` and ``make test`` start it as soon as numpy, numba and mnistlab are installed, while
pip installs the rest; with every kernel already marked compiled it returns at once.

A lock file in the cache folder keeps two such processes from compiling the same thing at once.

``python -m mnistlab.engine.warm keras`` (``warm_keras``) fills JAX's persistent compilation
cache with what a first tutorial run would compile (~2.5 s of its start-up and finish).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

LOCK = "warming.lock"


def _lock_path() -> Path:
    from mnistlab.engine import kernels

    folder = Path(kernels.load().numba.config.CACHE_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / LOCK


def _locked(path: Path) -> bool:
    """Is another process holding the compile lock now?"""
    from mnistlab.runlock import lock_held

    return bool(lock_held(path))


def compiling() -> bool:
    """Is a background compilation running now (in any process)?"""
    return _locked(_lock_path())


class Warming:
    """A background compilation: ``ready(stage)`` once that stage's training kernels are cached."""

    def __init__(self, pid: int | None, lock: Path):
        self.pid, self.lock = pid, lock
        self._ready: set[str] = set()

    def running(self) -> bool:
        """Is the process this handle started still running?"""
        if self.pid is None:
            return False
        try:
            if os.waitpid(self.pid, os.WNOHANG)[0] == 0:
                return True
        except ChildProcessError:  # reaped already
            pass
        self.pid = None
        return False

    def ready(self, stage: str = "complete") -> bool:
        """Are the training kernels of ``stage`` (``kernels.STAGES``) cached?"""
        if stage in self._ready:
            return True
        from mnistlab.engine import kernels

        # marked before the process goes on to the next stage or to the conv kernels
        if kernels.compiled_before(stage=stage):
            self._ready.add(stage)
            return True
        if self.pid is not None:
            if self.running():
                return False  # still compiling
        elif _locked(self.lock):  # another process's compilation
            return False
        if kernels.compiled_before(stage=stage):
            self._ready.add(stage)
        return stage in self._ready


_started: Warming | None = None  # the last compilation this process started


def start(training: bool = False) -> Warming:
    """Start compiling the training kernels in the background (unless another process already
    is); return the handle to poll. The process runs in its own session, so it outlives the
    caller if it must (the next run then finds the cache complete). ``training``: the caller
    trains meanwhile, so the convnet kernels wait until it has exited (``--after``)."""
    global _started
    lock = _lock_path()
    if _started is not None and _started.lock == lock and _started.running():
        return _started  # this process's own, which may not have taken the lock yet
    if _locked(lock):
        return Warming(None, lock)
    from mnistlab.engine import kernels

    env = {**os.environ, "NUMBA_CACHE_DIR": kernels.load().numba.config.CACHE_DIR}
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    argv = [sys.executable, "-m", "mnistlab.engine.warm"]
    if training:
        argv += ["--after", str(os.getpid())]
    pid = os.posix_spawn(sys.executable, argv, env, file_actions=quiet, setsid=True)
    _started = Warming(pid, lock)
    return _started


def compile_all() -> None:
    """Compile (or load) every kernel ``mnistlab train`` calls, with the argument types it uses:
    the MLP loop's (``compile_training``), the convnet engine's and the augmentation warp."""
    compile_training()
    compile_conv()
    compile_augment()


def compile_training() -> None:
    """Compile (or load) the MLP training loop's kernels by running them on a tiny network, then
    mark them compiled."""
    from mnistlab.engine.jit_loop import JitLoop

    rng = np.random.default_rng(0)
    plan = [
        SimpleNamespace(kernel=rng.standard_normal((16, 8), np.float32), activation="relu",
                        bias=np.zeros(8, np.float32), dropout=0.0),
        SimpleNamespace(kernel=rng.standard_normal((8, 4), np.float32), activation="softmax",
                        bias=np.zeros(4, np.float32), dropout=0.0),
    ]
    sgd = SimpleNamespace(learning_rate=0.01, momentum=0.0, nesterov=False, momentums=[])
    loop = JitLoop(plan, sgd, 4, 16, 10, compile_now=True)
    x = rng.integers(0, 256, (10, 16), dtype=np.uint8)
    y = np.arange(10) % 4
    for two in (True, False):
        loop.two = two
        loop._run(x, y, np.arange(10), None, two)
    from mnistlab.engine import kernels

    loop.predict(x.astype(np.float32))  # validation while ``forward_two`` is not ready
    kernels.mark_compiled("loop")  # a run on the replica switches now (~3 s before the rest)
    loop.predict(x)  # uint8 rows: the Predictor
    loop.two = loop.fwd_two = True
    loop.predict(x.astype(np.float32))  # validation on two threads (``kernels.forward_two``)
    kernels.mark_compiled()


def compile_conv(parts: tuple[str, ...] = ()) -> None:
    """Compile (or load) the conv engine's kernels, ``parts`` of them (``conv_kernels.PARTS``;
    default: all) with the argument types ``fit_conv`` uses, on a tiny convnet; mark each part
    once it is built, and the cache complete once every part is."""
    from mnistlab.engine import conv_kernels as K
    from mnistlab.engine.conv_plan import ConvPlan, Spec

    todo = parts or K.PARTS
    rng = np.random.default_rng(0)
    specs = [
        Spec(K.CONV, (6, 6, 1), (4, 4, 2), (3, 3), (0, 0), K.RELU, 0.0, np.zeros((3, 3, 1, 2)),
             np.zeros(2)),
        Spec(K.POOL, (4, 4, 2), (2, 2, 2), (2, 2)),
        Spec(K.DENSE, (1, 1, 8), (1, 1, 3), act=K.SOFTMAX, rate=0.5, kernel=np.zeros((8, 3)),
             bias=np.zeros(3)),
    ]
    size = sum(a.size for sp in specs for a in (sp.kernel, sp.bias) if a is not None)
    plan = ConvPlan(specs, rng.standard_normal(size, np.float32) * 0.1, [], [], (6, 6, 1), 3)
    chunk, workers = 2, K.worker_threads(2)
    layout, floats, ints = plan.layout(chunk)
    s, si = np.empty((workers, floats), np.float32), np.empty((workers, ints), np.int32)
    partial, stats = np.empty((2, size), np.float32), np.zeros((2, 2))
    y, idx = np.arange(4) % 3, rng.permutation(4)
    drop = np.array([12345, 0, plan.mask_units], np.int64)
    m, v = np.zeros(size, np.float32), np.zeros(size, np.float32)
    x8 = rng.integers(0, 256, (4, 36), dtype=np.uint8)
    f = np.float32
    calls = {"reduce_adam": lambda: K.reduce_adam(partial, 2, plan.params, m, v, f(1e-3), f(0.9),
                                                  f(0.999), f(1e-7)),
             "reduce_sgd": lambda: K.reduce_sgd(partial, 2, plan.params, m, f(0.01), f(0.9),
                                                False)}
    for x, scale in ((x8, f(1 / 255)), (x8.astype(np.float32), f(1))):
        calls[f"gradients-{x.dtype}"] = functools.partial(
            K.gradients, x, y, idx, scale, chunk, plan.params, layout, plan.keep, drop, s, si,
            partial, stats, np.array([0.9, 0.1 / 3], np.float32))
        calls[f"predict-{x.dtype}"] = functools.partial(
            K.predict, x, scale, chunk, plan.params, layout, plan.keep, s, si,
            np.empty((4, 3), np.float32))
    unknown = set(todo) - set(calls)
    if unknown:
        raise ValueError(f"no such part of the conv kernels: {sorted(unknown)}; "
                         f"parts are {K.PARTS}")
    for part in todo:
        calls[part]()
        K.mark_compiled(part)
    if K.compiled_before(*K.PARTS):
        K.mark_compiled()


def compile_augment() -> None:
    """Compile (or load) the augmentation warp (``augment._warp``) for the pixel types training
    gives it (uint8 images, float32 ones)."""
    from mnistlab import augment
    from mnistlab.config import AugmentConfig

    t = augment.draw(AugmentConfig(shift=0.1, erase=0.5), 2, 0, 0)
    for images in (np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.float32)):
        augment.transform(images, t)


def warm_keras() -> None:
    """Fill JAX's persistent compilation cache (``backend.use_compile_cache``) with the programs
    a first tutorial run on 28x28 images would compile: one per initializer shape when the model
    is built (~2 s of its start-up), the step counter's update after an epoch, the test set's
    prediction in batches of 2,048 (10,000 test images, as MNIST and Fashion-MNIST have) and the
    Predictor's check. Nothing to do on another backend or with the cache switched off. Also
    keeps the template of the tutorial model's Keras files (``mnistlab.keras_files``), so that a
    first tutorial run on 28x28 images (the default seed) finishes without importing Keras."""
    from importlib.metadata import version

    from mnistlab import keras_files
    from mnistlab.backend import compile_cache_dir, import_keras
    from mnistlab.config import Config

    if os.environ.get("KERAS_BACKEND") != "jax":
        return
    folder = compile_cache_dir()
    done = folder / f"warmed-keras{version('keras')}-jax{version('jax')}" if folder else None
    config = Config()
    key = keras_files.key(config, (28, 28), 10)
    template = keras_files.folder() is not None and keras_files.Template.load(key) is None
    if (done is None or done.is_file()) and not template:
        return
    import_keras()
    from mnistlab.evaluation import predict_proba
    from mnistlab.inference import Predictor
    from mnistlab.model import build_model, compile_model

    model = build_model(config.model, (28, 28), 10, seed=config.seed)
    compile_model(model, config.train, 1)
    counter = model.optimizer.iterations  # the fast loop adds each epoch's steps (write_back)
    counter.assign(counter + 1)
    model.optimizer.build(model.trainable_variables)
    if template:  # the tutorial's first run then finishes without Keras (mnistlab.keras_files)
        keras_files.make_from_model(key, model)
    if done is None or done.is_file():
        return
    predict_proba(model, np.zeros((10_000, 28, 28), np.uint8))
    Predictor.from_model(model)
    with contextlib.suppress(OSError):
        done.touch()


def compile_conv_once(parts: tuple[str, ...] = ()) -> None:
    """``compile_conv(parts)`` under the compile lock, unless another process has meanwhile (the
    lock waits for a background compilation to finish instead of compiling the same code twice)."""
    from mnistlab.engine import conv_kernels as K

    try:
        lock = open(_lock_path(), "a+")  # noqa: SIM115 (held across the compilation)
    except OSError:  # no writable cache folder: numba compiles in memory
        compile_conv(parts)
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not K.compiled_before(*parts):
            compile_conv(parts)


def _yield_the_cores() -> None:
    """Run only on time no other process wants (Linux's SCHED_IDLE), else at the lowest nice.

    At nice 19 the compiler still took its slices from a training run's second thread: each of
    the run's two-thread steps waited at its barrier for the thread the compiler held, and its
    first compiled epoch took 0.6-4.3 s instead of 0.11-0.13 s (measured side by side).

    A process ``start`` spawned leads a session of its own, and Linux (``sched_autogroup``) shares
    the CPU between sessions first and only then between the threads inside one: SCHED_IDLE alone
    left it ~70 % of a core against a run started from a terminal, whose two-thread epochs took
    0.4-5.3 s instead of 0.10 (measured). So a session leader also sets its session's nice to 19
    (its own session holds only this process); then those epochs took 0.17-0.2 s. Not in a
    session it shares (``make``'s): that would slow everything else in it."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        with contextlib.suppress(OSError):
            os.nice(19)
    if hasattr(os, "getsid") and os.getsid(0) == os.getpid():
        with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
            f.write("19")


def main() -> None:
    _yield_the_cores()
    if sys.argv[1:] == ["keras"]:  # `make run`, once Keras and JAX are installed
        warm_keras()
        return
    try:
        lock = _lock_path()
    except ImportError as e:  # no numba or no OpenBLAS: training uses the numpy loop
        print(f"mnistlab: nothing to compile ({e}); training will use the numpy loop")
        return
    if sys.argv[1:2] == ["--after"]:  # started by a run that trains on the replica meanwhile
        from mnistlab.engine import kernels

        with open(lock, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            if not kernels.compiled_before():
                compile_training()
        _wait_for_exit(int(sys.argv[2]))  # without the lock: a convnet run may take it meanwhile
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # waits for another compilation to finish
        if not _all_cached():
            compile_all()


def _wait_for_exit(pid: int) -> None:
    """Return once process ``pid`` has exited (or is a zombie waiting for its parent)."""
    import time

    stat = Path(f"/proc/{pid}/stat")
    while True:
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                return
        except FileNotFoundError:
            return
        except OSError:  # no /proc here
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, PermissionError):  # gone (or its number reused)
                return
        time.sleep(0.5)


def _all_cached() -> bool:
    """Is every kernel marked compiled from its file's current text (nothing to do)?"""
    from mnistlab.engine import conv_kernels, kernels

    return kernels.compiled_before() and conv_kernels.compiled_before()


if __name__ == "__main__":
    main()
