"""The tracking store before the first write: its database driver, and one initialisation.

Two sweeps launched at once on a fresh sqlite store both used to run MLflow's schema
migrations on the same file, and the second crashed (``duplicate column name``).
:func:`prepare_store` initialises the store (tracking and model-registry tables) once: under
an exclusive file lock beside a sqlite file, or, on a shared database (PostgreSQL, MySQL)
where two drivers on two machines share no file system, by retrying while the other
migration finishes.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from results.uris import redact_text, redact_uri
from trainers.errors import ConfigError

DB_SCHEMES = ("postgresql", "mysql", "mssql")
INIT_ATTEMPTS = 6
INIT_RETRY_S = 3.0


class StoreError(ConfigError):
    """The tracking store cannot be used (missing driver, failing initialisation)."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def check_db_driver(uri: str) -> None:
    """Raise :class:`StoreError` when the Python driver of a database URI is not installed.

    Uses SQLAlchemy's own choice of driver (``postgresql://`` -> psycopg,
    ``postgresql+psycopg2://`` -> psycopg2, ``mysql://`` -> MySQLdb, ...), so the check
    matches what MLflow will import.
    """
    scheme = urlparse(uri).scheme
    if scheme.split("+", 1)[0] not in DB_SCHEMES:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(uri).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise StoreError(f"tracking URI {redact_uri(uri)}: {redact_text(str(exc))}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = getattr(exc, "name", None) or str(exc)
        raise StoreError(
            f"tracking URI {redact_uri(uri)} needs the Python driver '{module}', which is not "
            f"installed; install it (for PostgreSQL: pip install 'psycopg[binary]') or pick "
            "the driver in the URI (e.g. postgresql+psycopg2://...)") from None


@contextlib.contextmanager
def _init_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on a file beside a sqlite database; nothing for other stores."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    lock = db.parent / f".{db.name}.init-lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_store(uri: str) -> None:
    """Create (or check) the store's tables once, safely against a concurrent launch.

    Opens the tracking and the model-registry store (the sweep lock lives in the registry).
    A sqlite file is initialised under :func:`_init_lock`; a shared database is retried a few
    times, since a failing migration means another driver is running it right now.
    """
    from mlflow import MlflowClient

    last: Exception | None = None
    for attempt in range(INIT_ATTEMPTS):
        try:
            with _init_lock(uri):
                client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                client.search_experiments(max_results=1)
                client.search_registered_models(max_results=1)
            return
        except Exception as exc:  # noqa: BLE001 - any store error: retry, then one line
            last = exc
            if sqlite_path(uri) is not None and attempt >= 1:
                break
            time.sleep(INIT_RETRY_S)
    first = str(last).strip().splitlines()[0] if last and str(last).strip() else ""
    raise StoreError(f"tracking store {redact_uri(uri)} cannot be opened: "
                     f"{type(last).__name__}: {redact_text(first)[:300]}")


def error_code(exc: BaseException) -> str:
    """MLflow's error code of a store exception (``RESOURCE_ALREADY_EXISTS``, ...), else ""."""
    return str(getattr(exc, "error_code", ""))


def check_not_deleted(uri: str, experiment: str) -> None:
    """Raise :class:`StoreError` when an experiment of this name is in MLflow's trash: a sweep
    would restore it silently, with whatever runs it holds (another tool's, an abandoned
    study's)."""
    from mlflow import MlflowClient

    found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "deleted":
        raise StoreError(
            f"experiment {experiment!r} was deleted in {redact_uri(uri)} (id "
            f"{found.experiment_id}); restore it to continue it (MLFLOW_TRACKING_URI=<the store> "
            f"mlflow experiments restore --experiment-id {found.experiment_id}), or choose "
            "another --name")
