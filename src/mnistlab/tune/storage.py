"""Where a study lives: a relational database that Optuna reads and writes through SQLAlchemy.

``sqlite:///runs/tune-NAME/study.db`` by default (one machine, any number of worker processes);
``postgresql://user:password@host:port/database`` (or ``mysql://...``) to share one study between
machines. SQLite is opened with a 60 s busy timeout: worker processes take turns to write instead
of failing with "database is locked" (Python's default is 5 s, which a busy machine exceeds).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path

from mnistlab.tune.errors import StorageError

SCHEMES = ("sqlite", "postgresql", "mysql")
SQLITE_TIMEOUT_S = 60
# A trial's process sends a heartbeat this often; a trial silent for GRACE_S (its process was
# killed) is marked failed when the next trial starts, so it does not stay "running" for ever.
HEARTBEAT_S = 10
GRACE_S = 120


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and files)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we can find; show only its scheme
        return url.split("://", 1)[0] + "://..." if "://" in url else "<unparsable URL>"


def default_url(folder: str | Path) -> str:
    """``sqlite:///`` URL of ``study.db`` in a study folder (absolute, so workers agree)."""
    return f"sqlite:///{Path(folder).resolve() / 'study.db'}"


def check_url(url: str) -> str:
    """Validate a storage URL's form before anything connects; return its scheme.

    Raises:
        StorageError: not a URL, or a scheme other than sqlite, postgresql or mysql.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    hint = ("Use sqlite:///path/to/study.db or postgresql://user:password@host:5432/database "
            "(mysql://... also works)")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"invalid storage URL {redact(url)!r}. {hint}") from None
    scheme = parsed.get_backend_name()
    if scheme not in SCHEMES:
        raise StorageError(f"unsupported storage {scheme!r} in {redact(url)!r}. {hint}")
    if scheme == "sqlite" and not parsed.database:
        raise StorageError(f"{redact(url)!r} names no database file. {hint}")
    if scheme != "sqlite" and not parsed.host:
        raise StorageError(f"{redact(url)!r} names no host. {hint}")
    return scheme


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` means psycopg (3) to SQLAlchemy 2.1 and psycopg2 to 2.0: use whichever
    of the two is installed, so the bare URL works with either."""
    import importlib.util

    if not url.startswith("postgresql://"):
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + url[len("postgresql://"):]
    return url


def open_storage(url: str):
    """Connect to the study storage (creating Optuna's tables on first use).

    Returns:
        An ``optuna.storages.RDBStorage`` with heartbeats, so trials of killed processes fail.

    Raises:
        StorageError: bad URL, a missing database driver, or the database cannot be reached.
    """
    import optuna
    import sqlalchemy.exc

    scheme = check_url(url)
    url = _with_installed_driver(url)
    kwargs: dict = {}
    if scheme == "sqlite":
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    else:
        kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's terms
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                                  heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=GRACE_S)
        except ImportError:
            raise StorageError(
                f"no database driver for {scheme} storage {redact(url)!r}. Install it with "
                "`pip install 'mnistlab[tune]'` (psycopg for PostgreSQL)"
            ) from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            # Two machines creating Optuna's tables at the same moment: one of them loses the
            # race (duplicate key); a moment later the tables are there.
            error = e
            time.sleep(1 + attempt)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            error = e
            break
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    raise StorageError(
        f"cannot open study storage {redact(url)!r}: {reason}. Check that the database "
        "server is running and reachable, and the URL's host, port, user and password"
    )


@contextlib.contextmanager
def opened(url: str):
    """``open_storage`` for the length of a ``with`` block; its connections are closed after
    (a PostgreSQL connection left to the garbage collector is a ResourceWarning)."""
    storage = open_storage(url)
    try:
        yield storage
    finally:
        storage.remove_session()
        storage.engine.dispose()
