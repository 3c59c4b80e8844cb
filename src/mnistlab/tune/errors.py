"""Errors of ``mnistlab tune`` (subclasses of ``mnistlab.errors.MnistlabError``, so the CLI prints
them as one ``Error: ...`` line)."""

from mnistlab.errors import MnistlabError


class TuneError(MnistlabError):
    """A study cannot start or continue (another study's settings, every trial failing, ...)."""


class StorageError(TuneError):
    """A study storage URL is invalid, or its database cannot be reached."""
