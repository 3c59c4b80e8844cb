"""Datasets: named sources and a user's own files, all in one layout.

Every loader returns a ``Dataset``: uint8 images ``(N, H, W)`` with values 0-255 and int64 labels
``(N,)`` in ``0..num_classes-1``, for a train and a test part, plus where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mnistlab.errors import DataError, shorten_repr

NAMES = ("mnist", "fashion_mnist", "digits", "mnist_sample")


@dataclass(frozen=True)
class Dataset:
    """Images and labels for training and testing, with provenance.

    Attributes:
        name: dataset name (``mnist``, ..., or ``custom`` for ``--data``).
        x_train: uint8 array ``(N, H, W)``, 0-255, white ink on black.
        y_train: int64 array ``(N,)``.
        x_test: uint8 array ``(M, H, W)``.
        y_test: int64 array ``(M,)``.
        class_names: one name per class, index = label.
        source: where the data was read from (file paths or package resource).
        sha256: sha256 of each file read, keyed by file name.
        notes: anything a user should know (e.g. how a test split was made).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] = tuple(str(i) for i in range(10))
    source: str = ""
    sha256: dict[str, str] = field(default_factory=dict)
    notes: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.x_train.shape[1:])


def load_dataset(
    name: str = "mnist", path: str | None = None, mirrors=(), *, progress=None
) -> Dataset:
    """Load a named dataset, or a user's own files when ``path`` is given.

    Args:
        name: one of ``NAMES``; ignored when ``path`` is set.
        path: a Keras-layout ``.npz``, a directory of the four IDX files, or an image folder.
        mirrors: extra download origins, tried before ``$MNISTLAB_MIRRORS`` and the Keras origin
            (``mnist`` and ``fashion_mnist``): base URLs, or full URLs ending in the file name.
        progress: optional ``progress(file_name, bytes_done, bytes_total_or_None)`` called while
            downloading; the library itself never prints.

    Returns:
        A validated ``Dataset``.

    Raises:
        DataError: unknown name, unreadable or invalid files, or no way to get the data
            (``DownloadError``, whose message names the cache path and the ways out).
    """
    from mnistlab.data import sources

    if path:
        return sources.load_path(path)
    if name not in NAMES:
        raise DataError(
            f"unknown dataset {shorten_repr(name)}. Choose one of {', '.join(NAMES)}, or pass --data PATH"
        )
    return sources.load_named(name, mirrors=mirrors, progress=progress)


def load_with_fallback(
    names, path: str | None = None, mirrors=(), *, progress=None, on_fallback=None
) -> Dataset:
    """Load the first of ``names`` that can be had, trying the next one when a dataset cannot.

    Args:
        names: dataset names in order of preference: the configured one, then the fallbacks.
        path: a user's own data (see ``load_dataset``); with it there is no fallback, since a
            named dataset is no stand-in for someone's own files.
        mirrors, progress: as for ``load_dataset``.
        on_fallback: called as ``on_fallback(name, error, next_name)`` before each fallback, so
            the caller can say out loud that it is not getting the data it asked for.

    Returns:
        The first ``Dataset`` that loaded.

    Raises:
        DataError: the last name (or ``path``) failed too, or ``names`` is empty. When a named
            dataset cannot be had, the message ends with the named datasets that work offline now.
    """
    if path:
        return load_dataset(path=path, mirrors=mirrors, progress=progress)
    names = list(names)
    if not names:
        raise DataError(f"no dataset to load: give a name from {', '.join(NAMES)}; received none")
    *firsts, last = names
    for i, name in enumerate(firsts):
        try:
            return load_dataset(name, mirrors=mirrors, progress=progress)
        except DataError as e:
            if on_fallback is not None:
                on_fallback(name, e, names[i + 1])
    try:
        return load_dataset(last, mirrors=mirrors, progress=progress)
    except DataError as e:
        from mnistlab.data.sources import here_now

        if last not in NAMES or not (hint := here_now(names)):
            raise
        raise type(e)(f"{e}\n{hint}") from None
