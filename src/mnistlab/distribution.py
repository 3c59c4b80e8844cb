"""Data-parallel training on several devices (JAX backend).

``keras.distribution.DataParallel`` keeps a full copy of the model's variables on every device and
splits each global batch along its first axis into equal slices, one per device; the gradients are
averaged over the whole global batch, so one step on N devices makes the same update as one step on
a single device (up to floating-point summation order). ``train.batch_size`` stays the *global*
batch size, and it must split evenly: ``batch_size % n_devices == 0``.

Every batch must split evenly too, including the last, partial one of an epoch. So the training and
validation arrays are cut to a multiple of the number of devices before training: at most
``n_devices - 1`` samples of each are left out, and how many is recorded in the run's manifest.
Evaluation and saving happen on one device after training, exactly as a later process would load
the model.

On a machine without several accelerators, JAX can split the CPU into virtual devices; this must be
set before JAX is imported::

    XLA_FLAGS=--xla_force_host_platform_device_count=2 mnistlab train --devices 2

Multi-host training is described in docs/multihost.md.
"""

from __future__ import annotations

from mnistlab.config import Config
from mnistlab.errors import ConfigError

VIRTUAL_DEVICES_HINT = (
    "To train on N virtual CPU devices, set XLA_FLAGS=--xla_force_host_platform_device_count=N in "
    "the environment before Python starts (it must be set before jax is imported)"
)


def require_jax_backend(backend: str) -> None:
    if backend != "jax":
        raise ConfigError(
            f"training on several devices needs the JAX backend; this process uses {backend!r}. "
            "Unset KERAS_BACKEND (mnistlab defaults to jax) or set KERAS_BACKEND=jax, or train "
            "with --devices 1"
        )


def devices_for(spec: str) -> list[str]:
    """Resolve a device count into the devices to train on.

    Args:
        spec: ``"1"``, ``"2"``, ... or ``"all"``.

    Returns:
        Keras device names, e.g. ``["cpu:0", "cpu:1"]`` (the first N of
        ``keras.distribution.list_devices()``, accelerators before CPUs).

    Raises:
        ConfigError: the backend is not JAX, the spec is not a positive integer or ``all``, or
            more devices are asked for than exist.
    """
    import keras

    require_jax_backend(keras.backend.backend())
    text = str(spec).strip().lower()
    if text != "all" and not (text.isdigit() and int(text) >= 1):
        raise ConfigError(
            f"train.devices must be a positive whole number or 'all'; received {spec!r}"
        )
    available = keras.distribution.list_devices()
    if text == "all":
        return list(available)
    wanted = int(text)
    if wanted > len(available):
        raise ConfigError(
            f"{wanted} devices were asked for but this process has {len(available)}: "
            f"{', '.join(available)}. Ask for at most {len(available)}, or 'all'. "
            f"{VIRTUAL_DEVICES_HINT}"
        )
    return list(available[:wanted])


def check_batch_size(batch_size: int, n_devices: int) -> int:
    """Return the per-device batch size.

    Raises:
        ConfigError: ``batch_size`` does not split evenly over ``n_devices``.
    """
    if batch_size % n_devices:
        lower = batch_size - batch_size % n_devices
        raise ConfigError(
            f"train.batch_size ({batch_size}) is the global batch and must be divisible by the "
            f"number of devices ({n_devices}) so each device gets an equal share. Use "
            f"{lower or n_devices} or {lower + n_devices}; received batch_size={batch_size}"
        )
    return batch_size // n_devices


def even_length(n: int, n_devices: int) -> int:
    """The largest length <= ``n`` that splits evenly over ``n_devices``."""
    return n - n % n_devices


def local_rows(n: int, batch: int, processes: int, process: int):
    """Row indices of process ``process``'s slice of every global batch of ``n`` rows.

    Every batch (including the last, shorter one) must split evenly over the processes.
    """
    import numpy as np

    parts = []
    for start in range(0, n, batch):
        size = min(batch, n - start) // processes
        parts.append(np.arange(start + process * size, start + (process + 1) * size))
    return np.concatenate(parts) if parts else np.arange(0)


def data_parallel_for(config: Config) -> DataParallelTraining | None:
    """``DataParallelTraining(config)`` when ``train.devices`` is not ``"1"``, else ``None``.

    Raises:
        ConfigError: see ``DataParallelTraining``.
    """
    return None if config.train.devices == "1" else DataParallelTraining(config)


class DataParallelTraining:
    """Set up, and later undo, data-parallel training for one ``train()`` call.

    Creating it checks everything (backend, device count, batch size) before any file is written.
    ``start`` sets the Keras distribution (call it before the model is built, so its variables are
    replicated on every device); ``stop`` restores the previous one.

    Attributes:
        devices: the device names used.
        config: the configuration to train with: ``train.loop`` is ``"fit"`` (the fast loop runs
            on one device), everything else unchanged.
    """

    def __init__(self, config: Config):
        import jax

        self.devices = devices_for(config.train.devices)
        self.per_device_batch = check_batch_size(config.train.batch_size, len(self.devices))
        train = config.train.model_copy(update={"loop": "fit"})
        self.config = config.model_copy(update={"train": train})
        # In a multi-process job (mnistlab.cluster) each process feeds its own slice of every
        # global batch; Keras assembles the global batch from the processes' slices in order.
        self.processes, self.process = jax.process_count(), jax.process_index()
        self.batch_size = config.train.batch_size // self.processes  # what this process feeds
        self._previous = None

    def start(self, run, train: tuple, val: tuple) -> tuple[tuple, tuple]:
        """Turn on data parallelism; cut the data so every batch splits evenly; record both.

        Args:
            run: the ``Run`` being trained (its manifest gets ``devices`` and ``data_parallel``).
            train: ``(x, y)`` training arrays, first axis = samples.
            val: ``(x, y)`` validation arrays.

        Returns:
            ``(train, val)`` cut to a multiple of the number of devices.
        """
        import keras

        n = len(self.devices)
        keep_train, keep_val = even_length(len(train[0]), n), even_length(len(val[0]), n)
        run.update(devices=list(self.devices), data_parallel={
            "global_batch": self.config.train.batch_size,
            "per_device_batch": self.per_device_batch,
            "left_out": {"train": len(train[0]) - keep_train, "val": len(val[0]) - keep_val},
        })
        self._previous = keras.distribution.distribution()
        layout = keras.distribution.DataParallel(devices=self.devices)
        if self.processes > 1:
            run.update(processes=self.processes)
            layout.auto_shard_dataset = False  # each process passes its own slice (see local)
        keras.distribution.set_distribution(layout)
        return tuple(a[:keep_train] for a in train), tuple(a[:keep_val] for a in val)

    def local(self, *arrays):
        """This process's part of arrays in global order: its slice of every global batch.

        Args:
            arrays: arrays of equal length (a multiple of the number of devices), first axis =
                samples, in the order the global batches take them.

        Returns:
            The same arrays, keeping per global batch of ``train.batch_size`` rows (and the last,
            shorter one) the ``process``-th of ``processes`` equal slices. One process: unchanged.
        """
        if self.processes == 1:
            return arrays
        idx = local_rows(len(arrays[0]), self.config.train.batch_size, self.processes,
                         self.process)
        return tuple(a[idx] for a in arrays)

    def stop(self) -> None:
        """Restore the distribution that was set before ``start`` (usually none)."""
        import keras

        keras.distribution.set_distribution(self._previous)
