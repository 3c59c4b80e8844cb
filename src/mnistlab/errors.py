"""Exceptions raised by mnistlab.

Every message says what was wrong, how to fix it, and what was received. The CLI turns these into
one ``Error: ...`` line and exit code 1; nothing else in the library prints.
"""


class MnistlabError(Exception):
    """Base class for every error mnistlab raises on purpose."""


class ConfigError(MnistlabError, ValueError):
    """A configuration file, preset, flag or ``--set`` override is invalid."""


class DataError(MnistlabError, ValueError):
    """A dataset file is missing, corrupt, or not in a supported layout."""


class DownloadError(DataError):
    """A dataset could not be downloaded or failed its sha256 check."""


class ImageError(MnistlabError, ValueError):
    """An image file cannot be decoded safely (format, size, truncation)."""


class ModelError(MnistlabError, ValueError):
    """A model file is missing, corrupt, or refused by the safety checks."""


class RunError(MnistlabError):
    """A run directory is missing, incomplete, or inconsistent with its manifest."""


class TrainingError(MnistlabError):
    """Training could not continue (e.g. the loss became NaN)."""


class TrainingInterrupted(TrainingError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; it can be resumed."""


class OutputPathError(MnistlabError, ValueError):
    """A folder given for output (``--show``) cannot be created or written."""


class ExportError(MnistlabError):
    """An export failed or did not match the Keras model."""


def shorten(value, limit: int = 100) -> str:
    """Return ``repr(value)`` (or the text itself for ``str``) cut to ``limit`` characters.

    Every user value quoted in an error goes through this, so a 10 MB string in a config file is
    not printed whole: ``'xxxx…' (10,000,000 characters)``.
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def shorten_repr(value, limit: int = 100) -> str:
    """Like ``shorten`` but always quotes strings with ``repr``."""
    return shorten(repr(value), limit)
