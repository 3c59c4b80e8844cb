"""Pinned downloads into the Keras cache: try each origin, verify sha256, then rename into place.

The cache is Keras's own (``$KERAS_HOME/datasets``, default ``~/.keras/datasets``), so a file the
Keras tutorial already downloaded is reused. A cached file is re-hashed on every use; a file that
fails its hash is removed. Downloads stream into a unique temporary file beside the target and are
renamed with ``os.replace`` only after the hash matches, so two processes fetching the same file at
once both end with a complete, verified copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from mnistlab.errors import DataError, DownloadError
from mnistlab.files import sha256_file

log = logging.getLogger(__name__)

MIRRORS_ENV = "MNISTLAB_MIRRORS"
TIMEOUT = 30.0
_CHUNK = 1 << 16
_SCHEMES = ("http", "https", "file")

# progress(file_name, bytes_done, bytes_total_or_None); the CLI draws a bar with it. The last
# call for a file that arrived whole has bytes_done == bytes_total, even without a Content-Length.
Progress = Callable[[str, int, int | None], None]


def cache_dir(subdir: str = "") -> Path:
    """Return the Keras dataset cache directory (``$KERAS_HOME/datasets[/subdir]``).

    Args:
        subdir: optional folder inside ``datasets`` (e.g. ``fashion-mnist``).

    Returns:
        The path; it may not exist yet.
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = Path(home) / "datasets"
    return path / subdir if subdir else path


def env_mirrors() -> list[str]:
    """Return the mirrors listed in ``$MNISTLAB_MIRRORS`` (comma- or space-separated)."""
    return [m for m in re.split(r"[,\s]+", os.environ.get(MIRRORS_ENV, "")) if m]


def origins(file_name: str, default_url: str, mirrors: Iterable[str] = ()) -> list[str]:
    """Return the URLs to try for ``file_name``: ``mirrors``, ``$MNISTLAB_MIRRORS``, then default.

    A mirror whose last path segment is ``file_name`` is used as is; any other mirror is a base
    URL that ``file_name`` is appended to.

    Raises:
        DataError: a mirror is not an http, https or file URL.
    """
    urls = []
    for mirror in [*mirrors, *env_mirrors()]:
        scheme = urllib.parse.urlsplit(mirror).scheme
        if scheme not in _SCHEMES:
            raise DataError(
                f"mirror {mirror!r} is not an http(s) or file URL. Fix data.mirrors or "
                f"${MIRRORS_ENV}, e.g. https://example.org/datasets/; received scheme {scheme!r}"
            )
        path = urllib.parse.urlsplit(mirror).path
        if path.rstrip("/").rsplit("/", 1)[-1] == file_name and not path.endswith("/"):
            urls.append(mirror)
        else:
            urls.append(mirror.rstrip("/") + "/" + file_name)
    urls.append(default_url)
    return list(dict.fromkeys(urls))


def fetch(
    dest: str | os.PathLike,
    sha256: str,
    urls: Sequence[str],
    progress: Progress | None = None,
    timeout: float = TIMEOUT,
) -> Path:
    """Return ``dest`` holding a file whose sha256 is ``sha256``, downloading it if needed.

    A cached ``dest`` is re-hashed; if it does not match it is removed and downloaded again. Each
    URL is tried in order until one yields a file with the right hash.

    Args:
        dest: final path of the file (its folder is created).
        sha256: expected hex digest.
        urls: origins to try, in order.
        progress: called as ``progress(name, done, total)`` while downloading.
        timeout: seconds to wait to connect and for each read.

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        DownloadError: every origin failed; the message lists each failure and the ways out.
    """
    dest = Path(dest)
    if dest.is_file():
        got = sha256_file(dest)
        if got == sha256:
            return dest
        log.warning("cached %s has sha256 %s, expected %s: removing it", dest, got, sha256)
        _remove(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"cannot create the cache folder {dest.parent}: {e.strerror}. "
            "Set KERAS_HOME to a writable folder"
        ) from None
    failures = []
    for url in urls:
        try:
            _download(url, dest, sha256, progress, timeout)
            return dest
        except _OriginFailed as e:
            log.info("origin failed: %s: %s", url, e)
            failures.append(f"  - {url}: {e}")
    raise DownloadError(
        f"could not download {dest.name}: every origin failed:\n"
        + "\n".join(failures)
        + "\nThree ways out:\n"
        f"  1. put the file (sha256 {sha256}) at {dest}\n"
        f"  2. set a mirror: {MIRRORS_ENV}=https://host/path/ or data.mirrors in the config\n"
        "  3. use your own copy with --data PATH (.npz, IDX folder or image folder)"
    )


class _OriginFailed(Exception):
    """One origin did not deliver a verified file (internal: turned into DownloadError)."""


def _download(url: str, dest: Path, sha256: str, progress: Progress | None, timeout: float):
    try:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise DownloadError(
            f"cannot write in the cache folder {dest.parent}: {e.strerror}. "
            "Set KERAS_HOME to a writable folder"
        ) from None
    try:
        with os.fdopen(fd, "wb") as out:
            digest, received, expected = _stream(url, out, dest.name, progress, timeout)
        if expected is not None and received != expected:
            raise _OriginFailed(
                f"transfer cut short: received {received} of {expected} bytes. Try again"
            )
        if digest != sha256:
            raise _OriginFailed(f"sha256 mismatch: expected {sha256}, received {digest}")
        os.replace(tmp, dest)
    finally:
        _remove(Path(tmp))


def _stream(url, out, name, progress, timeout):
    h = hashlib.sha256()
    received = 0
    request = urllib.request.Request(url, headers={"User-Agent": "mnistlab"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if progress:
                progress(name, 0, expected)
            while block := response.read(_CHUNK):
                h.update(block)
                out.write(block)
                received += len(block)
                if progress:
                    progress(name, received, expected)
            if progress and expected is None:  # the size is known now: let the bar finish
                progress(name, received, received)
    except urllib.error.HTTPError as e:
        raise _OriginFailed(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _OriginFailed(f"cannot connect ({e.reason})") from None
    except TimeoutError:
        raise _OriginFailed(f"no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise _OriginFailed(f"{type(e).__name__}: {e}") from None
    return h.hexdigest(), received, expected


def _remove(path: Path):
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
