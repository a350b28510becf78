"""Store outages as one error: `StoreUnavailableError`, naming the store and what to check.

The platform's own engines and MLflow's are given short connect and lock timeouts and a
`handle_error` hook, so a dead server, a locked file or a corrupt database fails within
seconds with a message instead of hanging or surfacing as a driver error. `store_outage`
recognises an outage anywhere in an exception chain: the API and CLI use it as a last
resort, so no outage is ever a 500 or a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, ExceptionContext, make_url
from sqlalchemy.exc import DatabaseError, InterfaceError, OperationalError

from mlops.errors import StoreUnavailableError

PLATFORM_DB = "platform database"
MLFLOW_STORE = "mlflow tracking store"
FEATURE_REGISTRY = "feature registry"
ONLINE_STORE = "online store (redis)"

CONNECT_TIMEOUT_S = 5
"""PostgreSQL connect timeout: an unreachable host fails in seconds, not after TCP's ~2 min."""
BUSY_TIMEOUT_MS = 5000
"""How long SQLite waits for another connection's lock before "database is locked"."""

_store_of: WeakKeyDictionary[Engine, str] = WeakKeyDictionary()


def describe_url(url: str | URL) -> str:
    """Where a database lives, for messages: the file of SQLite, host:port/db otherwise
    (never the user or password)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or "an in-memory SQLite database"
    return f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}/{parsed.database or ''}"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def database_outage(
    store: str, url: str | URL | None, error: BaseException
) -> StoreUnavailableError:
    """The outage behind a database error: what went wrong and what to check."""
    where = describe_url(url) if url is not None else "the database"
    text = str(getattr(error, "orig", None) or error).lower()
    if "locked" in text or "busy" in text:
        return StoreUnavailableError(
            store,
            f"{where} is locked by another connection (waited {BUSY_TIMEOUT_MS // 1000} s)",
            "Check for a process holding a long transaction on it, then retry.",
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return StoreUnavailableError(
            store,
            f"{where} is corrupt or not a database file",
            "Restore it from a backup; nothing was written.",
        )
    if url is not None and f'database "{make_url(url).database}" does not exist' in text:
        return StoreUnavailableError(
            store, f"{where} does not exist", "Create the database, or fix its URL in the settings."
        )
    if "no such table" in text or "does not exist" in text:
        return StoreUnavailableError(
            store,
            f"{where} has lost its tables (deleted or replaced while in use)",
            "Restore the database from a backup and restart the platform.",
        )
    return StoreUnavailableError(
        store,
        f"cannot reach {where}",
        "Check that the database server is running and reachable, and its URL in the settings.",
    )


def _is_outage(error: BaseException) -> bool:
    """Errors of the database or the connection to it, not of the statement: an
    IntegrityError (a taken name, a race the caller handles) stays what it is."""
    return isinstance(error, (OperationalError, InterfaceError)) or type(error) is DatabaseError


def guard_engine(engine: Engine, store: str) -> Engine:
    """Give an engine short timeouts and turn its outages into StoreUnavailableError.

    Idempotent: MLflow keeps its engines for the life of the process, and the platform
    guards them again whenever it opens a new client on them.
    """
    if engine in _store_of:
        return engine
    _store_of[engine] = store
    event.listen(engine, "handle_error", _handle_error)
    event.listen(engine, "do_connect", _connect_timeouts)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "before_cursor_execute", _shorter_busy_timeout, retval=True)
    return engine


def _handle_error(context: ExceptionContext) -> None:
    # A failed pre-ping only means a stale pooled connection: the pool reconnects.
    error = context.sqlalchemy_exception
    if context.is_pre_ping or error is None or not _is_outage(error):
        return
    engine = context.engine
    if engine is None:
        return
    raise database_outage(_store_of.get(engine, "database"), engine.url, error) from error


def _connect_timeouts(dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
    if dialect.name == "postgresql":
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    elif dialect.name == "sqlite":
        params.setdefault("timeout", BUSY_TIMEOUT_MS / 1000)


def _shorter_busy_timeout(
    _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
) -> tuple[str, Any]:
    """MLflow sets `PRAGMA busy_timeout = 20000` on every session: a locked mlflow.db would
    hold each request 20 s. Every busy timeout on a guarded engine becomes ours."""
    if statement.lstrip().lower().startswith("pragma busy_timeout"):
        return f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}", parameters
    return statement, parameters


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


@contextmanager
def outages_as_store_errors(store: str = "database", url: str | None = None) -> Iterator[None]:
    """Raise StoreUnavailableError for a store outage inside the block; a database error
    of no guarded engine is reported as one of `store` at `url`."""
    try:
        yield
    except StoreUnavailableError:
        raise
    except Exception as exc:
        outage = store_outage(exc, store, url)
        if outage is None:
            raise
        raise outage from exc


def store_outage(
    error: BaseException, store: str = "database", url: str | None = None
) -> StoreUnavailableError | None:
    """The store outage behind `error` (anywhere in its chain of causes), or None.

    Modules are looked up in `sys.modules` rather than imported: an exception of a
    library that was never imported cannot be in the chain, and the error path stays fast.
    """
    chain = _chain(error)
    for link in chain:
        if isinstance(link, StoreUnavailableError):
            return link
    redis_exceptions = sys.modules.get("redis.exceptions")
    requests_exceptions = sys.modules.get("requests.exceptions")
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    for link in chain:
        if redis_exceptions and isinstance(
            link, (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError)
        ):
            return StoreUnavailableError(
                ONLINE_STORE,
                f"cannot reach Redis ({type(link).__name__})",
                "Check that the Redis server of MLOPS_REDIS_URL is running and reachable.",
            )
        if requests_exceptions and isinstance(
            link,
            (
                requests_exceptions.ConnectionError,
                requests_exceptions.Timeout,
                requests_exceptions.RetryError,
            ),
        ):
            return mlflow_server_outage()
        if (
            mlflow_exceptions
            and isinstance(link, mlflow_exceptions.MlflowException)
            and link.error_code == "TEMPORARILY_UNAVAILABLE"
        ):
            return mlflow_server_outage()
        if isinstance(link, (OperationalError, InterfaceError)) or type(link) is DatabaseError:
            return database_outage(store, url, link)
    return None


def mlflow_server_outage() -> StoreUnavailableError:
    return StoreUnavailableError(
        MLFLOW_STORE,
        "MLflow's tracking server or database does not answer",
        "Check that the server or database of MLOPS_MLFLOW_TRACKING_URI is running and reachable.",
    )
